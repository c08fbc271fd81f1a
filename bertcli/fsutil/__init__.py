"""Output directories: claim, overwrite, refuse overlaps, lock, write atomically. Nothing a user
owns is ever lost.

This package is the one owner of these rules; every command that writes a directory goes through
it and never deletes anything itself. It does not know what goes into an output; the commands do.
files.py writes files atomically and checks paths; ownership.py reads and writes the markers;
lock.py holds one writer per output; outdir.py checks, claims and replaces output directories.

How a command uses it:

    check_output_dir(out, kind, overwrite=overwrite, inputs=inputs)   # first, before any work
    ...the work...
    with output_dir(out, kind, overwrite=overwrite, inputs=inputs, keep=keep) as tmp:
        ...write the files into tmp...   # swapped into place at the end; on failure, the old output stays

A command that writes in place over a long time (pretrain's run directory, make-data's resumable
output) calls `lock = claim_directory(out, kind, ...)` instead, records each file it writes with
`own(out, names)`, and releases the lock at the end (`lock.release()`). `remove_owned` deletes
what a directory's marker says bertcli wrote, and nothing else.

The rules:
- Ownership is per file. Every directory bertcli makes carries `.bertcli-owner.json`: its kind,
  the files bertcli wrote there with their sizes (None for a file bertcli rewrites or appends
  to), subdirectories that carry their own marker (a checkpoint in a run), and the tokens of the
  processes that wrote there. `--overwrite` and `--resume` delete only those files. Any other
  entry, at any depth, and any recorded file whose size has changed, stops the command with one
  line naming it (exit 2) - except the names a command keeps (`keep`): an export keeps a user's
  `README.md` model card, which moves into the new export (Hugging Face's convention).
- Everything is written under a temporary name and renamed into place, so a crash, a full disk
  or a kill leaves the old output or the new one, never a mix. Temporary names end in
  `.<token>.<pid>`: the token is random per process and recorded in the marker, so a later run can
  prove a leftover is bertcli's (a temporary directory also carries a pending marker with its
  writer's pid and host) and clean it up once that writer is dead. A user's `.tmp-anything` is
  never touched.
- Locks, markers and temporary names never follow a symbolic link and never truncate a file
  bertcli did not create (O_NOFOLLOW, O_EXCL, renames over the name, lstat checks).
- One writer per output: a lock on the resolved path, so an alias through a symbolic link gets the
  same lock. A symbolic link given as the output stays a link; the new directory replaces its target.
"""

from __future__ import annotations

from bertcli.fsutil.files import (TMP_PREFIX, TOKEN, atomic_path, input_file_problem, read_json, refuse_overlap,
                                  sha256_file, tmp_name, writable_problem, write_bytes_atomic, write_json_atomic)
from bertcli.fsutil.lock import LOCK_SUFFIX, BusyError, DirLock, lock_path_for
from bertcli.fsutil.ownership import (NESTED, OWNER_FILE, OWNER_FORMAT, foreign_entries, foreign_entry, mark_owned,
                                      own, read_owner, remove_files, remove_owned, remove_temps)
from bertcli.fsutil.outdir import (atomic_directory, check_output_dir, claim_directory, clean_leftovers, output_dir,
                                   refuse_foreign, swap_into_place)

__all__ = ["TMP_PREFIX", "TOKEN", "atomic_path", "input_file_problem", "read_json", "refuse_overlap", "sha256_file",
           "tmp_name", "writable_problem", "write_bytes_atomic", "write_json_atomic", "LOCK_SUFFIX", "BusyError",
           "DirLock", "lock_path_for", "NESTED", "OWNER_FILE", "OWNER_FORMAT", "foreign_entries", "foreign_entry",
           "mark_owned", "own", "read_owner", "remove_files", "remove_owned", "remove_temps", "atomic_directory", "check_output_dir",
           "claim_directory", "clean_leftovers", "output_dir", "refuse_foreign", "swap_into_place"]
