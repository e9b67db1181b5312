"""The shop's Python endpoints for its BFFs: screens whose composition YAML should not express
(a call made only for a signed-in customer, a payload cut for a phone)."""
