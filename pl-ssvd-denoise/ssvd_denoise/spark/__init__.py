"""Spark for the plugin: starting it (:mod:`.session`, :mod:`.conf`, :mod:`.kubernetes`, :mod:`.masterprobe`),
where a series' pixel blocks live (:mod:`.blocks`), and ending a run that Spark cannot go on with
(:mod:`.watchdog`)."""
