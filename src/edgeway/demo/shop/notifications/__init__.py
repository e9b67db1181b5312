"""The notifications service: e-mails to a local maildir, order e-mails from events, and the bulk
"send 10 e-mails, tell me when done" job that reports its progress over the bus."""
