"""Built-in device profiles (TOML data), installed as rethined_bench.device_profiles."""
