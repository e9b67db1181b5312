"""Running a gateway: the process and its workers, the admin API, live reload and the CLI."""
