"""Real deployment: certificates, node keys and the pieces a coordinator and hospitals run."""
