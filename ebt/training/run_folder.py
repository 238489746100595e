"""The run folder, claimed before anything is built: writable, locked by one run at a time, no stale temporaries of a
killed write, and no results that a fresh start would replace (docs/reliability.md)."""

import fcntl
import os
import shutil
import tempfile
from pathlib import Path

from lightning.pytorch.utilities import rank_zero_only

from ebt.errors import ConfigError, EnvironmentSetupError
from ebt.training.checkpoint import remove_stale_temporaries

RESULTS = ("summary.json", "checkpoints/last.ckpt")  # a folder holding either has a run's results


def check_writable(folder: Path) -> None:
    """A one-line :class:`EnvironmentSetupError` now, rather than a traceback at the first checkpoint, when ``folder``
    cannot be created or written (read-only file system, permissions)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-probe.", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        why = e.strerror or type(e).__name__
        raise EnvironmentSetupError(f"output folder {folder} is not writable ({why}); run in a writable folder "
                                    "(hydra.run.dir=<folder>)") from e


class RunLock:
    """An exclusive ``flock`` on ``<run>/.lock`` holding the owner's pid: one run per folder at a time. The kernel
    releases it when the process ends, however it ends (kill -9 included); :meth:`release` frees it earlier."""

    held: dict[Path, "RunLock"] = {}  # folders this process has claimed

    def __init__(self, folder: Path) -> None:
        self.folder, self.fd = folder, None

    def acquire(self) -> "RunLock":
        fd = os.open(self.folder / ".lock", os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise ConfigError(f"run folder {self.folder} is in use by another run (pid {holder}); wait for it to "
                              "end, or start this run in another folder (hydra.run.dir=<folder>)") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd
        RunLock.held[self.folder.resolve()] = self
        return self

    def release(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None
            RunLock.held.pop(self.folder.resolve(), None)


def claim_run_folder(folder: Path, *, resuming: bool, overwrite: bool) -> RunLock | None:
    """Rank 0 (the other DDP ranks share its folder): writable, locked, no stale temporaries, and no results that a
    fresh start would replace. Returns the lock to release at the end; a folder this process already claimed (the
    ``RunFolderGuard`` Hydra callback claims it before Hydra writes into it) returns the lock it holds."""
    if rank_zero_only.rank != 0:
        return None
    if folder.resolve() in RunLock.held:
        return RunLock.held[folder.resolve()]
    check_writable(folder)
    lock = RunLock(folder).acquire()
    try:
        for sub in (folder, folder / "checkpoints", folder / "csv"):
            for tmp in remove_stale_temporaries(sub):
                print(f"removed {tmp} (a write interrupted by a kill)", flush=True)
        check_fresh_start(folder, resuming=resuming, overwrite=overwrite)
    except BaseException:
        lock.release()
        raise
    return lock


def check_fresh_start(folder: Path, resuming: bool, overwrite: bool) -> None:
    """A run started without ``ckpt_path`` must not replace another run's results: refused unless ``overwrite``,
    which deletes them (``summary.json``, ``checkpoints/``, ``csv/``) first."""
    found = [name for name in RESULTS if (folder / name).is_file()]
    if resuming or not found:
        return
    if not overwrite:
        raise ConfigError(f"run folder {folder} already holds a run's results ({', '.join(found)}); resume it with "
                          "ckpt_path=last, start in another folder (drop hydra.run.dir), or pass overwrite=true to "
                          "replace them")
    (folder / "summary.json").unlink(missing_ok=True)
    for sub in ("checkpoints", "csv"):
        shutil.rmtree(folder / sub, ignore_errors=True)
    print(f"overwrite=true: deleted the previous results in {folder}", flush=True)
