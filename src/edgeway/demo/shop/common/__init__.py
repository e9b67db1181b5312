"""What every shop service shares: settings, its database, the bus, caller verification, start-up."""
