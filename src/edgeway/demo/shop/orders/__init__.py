"""The orders service: places orders through a saga (reserve stock → charge payment → confirm) that
compensates when a step fails, and publishes every status change."""
