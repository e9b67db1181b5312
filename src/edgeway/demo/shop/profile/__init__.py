"""The profile service: a slim local copy of the security service's users, plus preferences; the
new home of the account page the legacy monolith used to serve."""
