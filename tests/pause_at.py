"""Run a plugin's command, paused at a chosen point, so that a test can signal it exactly there.

    python pause_at.py MODULE:FUNCTION COMMAND [flags] inputdir outputdir

Every module that holds ``MODULE.FUNCTION`` gets a version of it that first
writes ``PAUSED MODULE:FUNCTION pid=N`` to stderr, then sleeps (at most a
minute), then does its work. Worker processes forked later inherit it. The
test waits for the line and sends its signal while the run sits at that point:
in the main process, or in a worker while the main process waits for it. The
plugin's code is not changed; the signal is a real one.
"""

import functools
import importlib
import os
import sys
import time

PAUSE_SECONDS = 60


def pause(target: str) -> None:
    module_name, function_name = target.split(":")
    module = importlib.import_module(module_name)
    original = getattr(module, function_name)

    @functools.wraps(original)
    def paused(*args, **kwargs):
        sys.stderr.write(f"PAUSED {target} pid={os.getpid()}\n")
        sys.stderr.flush()
        time.sleep(PAUSE_SECONDS)
        return original(*args, **kwargs)

    for loaded in list(sys.modules.values()):
        if getattr(loaded, function_name, None) is original:
            setattr(loaded, function_name, paused)


def main() -> None:
    target, command, *args = sys.argv[1:]
    entry = {"dcm_anon": "dcm_anon.__main__:command", "dicom2matrix": "dicom2matrix.__main__:main",
             "ssvd_denoise": "ssvd_denoise.__main__:main", "svd_render": "svd_render.__main__:main"}[command]
    entry_module, entry_function = entry.split(":")
    main_module = importlib.import_module(entry_module)
    pause(target)
    sys.argv = [command, *args]
    sys.exit(getattr(main_module, entry_function)())


if __name__ == "__main__":
    main()
