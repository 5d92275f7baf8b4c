# A package only so that hydra.searchpath=[pkg://asgd_plugin.conf] can find these configs.
