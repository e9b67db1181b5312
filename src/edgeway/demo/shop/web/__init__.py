"""The shop's single-page web app (plain HTML + JS, no build step) and the small server that
hands it out; the same page runs against the services directly or through the web BFF."""
