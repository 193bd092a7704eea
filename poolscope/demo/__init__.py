"""The embedded demo: a mini database, reference pools over real TCP, a workload with trouble."""
