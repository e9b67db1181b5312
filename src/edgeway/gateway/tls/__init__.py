"""HTTPS on the gateway's listener: the TLS contexts and the certificate chosen by SNI
(:mod:`.termination`), reloaded without dropping a connection; the plaintext listener that
redirects to HTTPS (:mod:`.redirect`); HSTS (:mod:`.hsts`); the client certificate of a mutual
TLS connection (:mod:`.peer`); their config (:mod:`.config`)."""
