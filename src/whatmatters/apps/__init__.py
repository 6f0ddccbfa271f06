"""The entry points as plain functions of a Hydra config (`experiments/*.py` are thin wrappers; tests call
these without Hydra): `run` (one grid point end to end), `score`, `drop`, `speed`, `table`, plus what they
share: config checks before any model loads (`validate`, `config_checks`, `method_checks`), store keys
(`run_keys`), tracking (`tracking`) and common steps (`common`)."""
