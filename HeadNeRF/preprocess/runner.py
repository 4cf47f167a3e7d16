"""The preprocessing run: select subjects, process each into ``subjectXXXX.h5`` (resumably), write split.json.

* ``--sb``/``--se`` index the input subjects in sorted name order, **``--se`` exclusive** (Python's
  ``range(sb, se)``, the seed's semantics); ``--se`` beyond the last subject is clamped with a note.
* Resumable: a subject is written to ``subjectXXXX.h5.partial`` and renamed when complete
  (``HeadNeRF.data.subject_file``). A finished ``subjectXXXX.h5`` is skipped on a re-run when it
  reads back as a valid file *of the same input* (its ``source_file`` attribute); a truncated or
  unreadable one is processed again, with a note. A leftover ``.partial`` (a killed run) is ignored
  and overwritten. ``kill -9`` therefore loses at most the subjects in progress.
* Outputs are keyed to their input: ``save_dir/subjects.json`` records which input name got
  which subject id, so adding a new person's folder to a photo folder and re-running processes
  the new person under a new id instead of shifting everyone's ids. A ``save_dir`` inside
  ``img_dir`` is never read as an input subject; ``save_dir == img_dir`` is refused.
* One run per save_dir: a second run into the same folder refuses in one line naming the first
  (``HeadNeRF.run_lock``), so two runs never delete each other's ``.partial`` files.
* ``num_workers > 1`` processes subjects in parallel processes (spawned, one torch thread each).
  Workers die with the parent (``PR_SET_PDEATHSIG``), so ``kill -9`` of the parent leaves none.
* A subject none of whose images has a usable face is named in the summary and makes the exit
  code 1 (its file is still written, every row with ``valid_mask`` False).
* Progress: a tqdm bar over subjects and one over images; every problem is one line on stderr;
  a summary at the end (rows written, rows invalid and why, seconds).
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import json
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from collections import Counter

import h5py
from tqdm import tqdm

from HeadNeRF.data import layout
from HeadNeRF.atomic_io import atomic_write_text
from HeadNeRF.data.subject_file import SubjectFileWriter, partial_path
from HeadNeRF.run_lock import RunLock, RunLockError

from . import readers
from .readers import InputError, SubjectSource
from .split import build_split, read_official_split
from .subject import PROCESSORS, ProcessOptions

__all__ = ["PreprocessConfig", "RunSummary", "run", "select_subjects"]


@dataclasses.dataclass
class PreprocessConfig:
    img_dir: str
    save_dir: str
    sb: int = 0
    se: int | None = None  # exclusive; None = to the end
    input_format: str | None = None  # None = detect
    image_size: int | None = None
    num_workers: int = 1
    split_file: str | None = None
    chunk_rows: int = 256
    photo_focal_factor: float | None = None
    fit_codes: bool = True
    fit_appearance: bool = True
    overwrite: bool = False
    progress: bool = True

    def __post_init__(self):
        if self.sb < 0:
            raise ValueError(f"--sb must be >= 0, got {self.sb}")
        if self.se is not None and self.se <= self.sb:
            raise ValueError(f"--se must be greater than --sb (--se is exclusive), got --sb {self.sb} --se {self.se}")
        if self.image_size is not None and self.image_size < 16:
            raise ValueError(f"--image_size must be at least 16 px, got {self.image_size}")
        if self.num_workers < 1:
            raise ValueError(f"--num_workers must be >= 1, got {self.num_workers}")
        if self.chunk_rows < 1:
            raise ValueError(f"--chunk_rows must be >= 1, got {self.chunk_rows}")
        if self.input_format is not None and self.input_format not in readers.FORMATS:
            raise ValueError(f"--input_format must be one of {readers.FORMATS}, got {self.input_format!r}")
        if os.path.exists(self.save_dir) and not os.path.isdir(self.save_dir):
            raise ValueError(f"--save_dir {self.save_dir} is an existing file, not a folder; pass a folder path")
        if os.path.realpath(self.save_dir) == os.path.realpath(self.img_dir):
            raise ValueError(f"--save_dir must differ from --img_dir ({self.img_dir}): outputs would be read as inputs")


@dataclasses.dataclass
class RunSummary:
    written: list = dataclasses.field(default_factory=list)  # subject ids written now
    skipped: list = dataclasses.field(default_factory=list)  # already finished
    failed: dict = dataclasses.field(default_factory=dict)  # name -> one-line reason
    no_face: list = dataclasses.field(default_factory=list)  # input names with no usable face in any image
    rows: int = 0
    valid_rows: int = 0
    invalid: Counter = dataclasses.field(default_factory=Counter)
    seconds: float = 0.0
    split: object = None
    stats: dict = dataclasses.field(default_factory=dict)  # subject id -> stats

    def lines(self) -> list[str]:
        out = [(f"subjects: {len(self.written)} written, {len(self.skipped)} skipped (already done), "
                f"{len(self.failed)} failed")]
        inv = sum(self.invalid.values())
        out.append(f"rows written: {self.rows} ({self.valid_rows} valid, {inv} invalid"
                   + (": " + ", ".join(f"{n} {why}" for why, n in self.invalid.most_common()) if inv else "") + ")")
        out += [f"failed: {why}" for why in self.failed.values()]
        out += [f"no usable face: {name} (every image of this subject was rejected; see the lines above)"
                for name in self.no_face]
        rate = self.rows / self.seconds if self.seconds > 0 else 0.0
        out.append(f"time: {self.seconds:.1f} s ({rate:.2f} images/s)")
        if self.split is not None:
            out.append(f"split: train subjects {self.split.train_subjects}, test subjects {self.split.test_subjects}, "
                       f"held-out cameras {self.split.heldout_cameras}, held-out frames {self.split.heldout_frames}")
        return out


MANIFEST = "subjects.json"


def _output_source(path: str) -> str | None:
    """The input name a finished output was written from (its ``source_file`` attribute), if readable."""
    try:
        with h5py.File(path, "r") as f:
            return str(f.attrs.get("source_file", "")) or None
    except OSError:
        return None


def _read_manifest(save_dir: str) -> dict[str, int]:
    """{input name: subject id} of earlier runs: subjects.json, else the finished outputs' attributes."""
    path = os.path.join(save_dir, MANIFEST)
    if os.path.isfile(path):
        try:
            with open(path) as f:
                raw = json.load(f)
            return {str(k): int(v) for k, v in raw.items()}
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            raise InputError(f"{path}: unreadable subject manifest ({exc}); delete it to rebuild it from the outputs") \
                from None
    out = {}
    if os.path.isdir(save_dir):
        for name in sorted(os.listdir(save_dir)):
            if name.startswith("subject") and name.endswith(".h5"):
                src = _output_source(os.path.join(save_dir, name))
                sid = readers.number_in(name)
                if src and sid is not None:
                    out.setdefault(src, sid)
    return out


def _key_to_manifest(subjects: list[SubjectSource], manifest: dict[str, int]) -> list[SubjectSource]:
    """Give every input the id it had in earlier runs; new inputs get their proposed id if free, else the next."""
    used = set(manifest.values())
    out = []
    for s in subjects:
        sid = manifest.get(s.name)
        if sid is None:
            sid = s.subject_id
            while sid in used:
                sid += 1
            manifest[s.name] = sid
            used.add(sid)
        out.append(dataclasses.replace(s, subject_id=sid))
    return out


def _write_manifest(save_dir: str, manifest: dict[str, int]) -> None:
    path = os.path.join(save_dir, MANIFEST)
    atomic_write_text(path, json.dumps(dict(sorted(manifest.items(), key=lambda kv: kv[1])), indent=1))


def select_subjects(cfg: PreprocessConfig, log) -> tuple[str, list[SubjectSource]]:
    fmt = cfg.input_format or readers.detect_format(cfg.img_dir)
    if not os.path.isdir(cfg.img_dir):
        raise InputError(f"{cfg.img_dir}: input folder not found")
    save_real = os.path.realpath(cfg.save_dir)
    subjects = [s for s in readers.list_subjects(cfg.img_dir, fmt) if os.path.realpath(s.path) != save_real]
    manifest = _read_manifest(cfg.save_dir)
    subjects = _key_to_manifest(subjects, manifest)
    if os.path.isdir(cfg.save_dir):
        _write_manifest(cfg.save_dir, manifest)
    if not subjects:
        raise InputError(f"{cfg.img_dir}: no {fmt} subjects found")
    n = len(subjects)
    if cfg.sb >= n:
        raise InputError(f"--sb {cfg.sb} is beyond the last subject (there are {n}: indices 0..{n - 1})")
    se = n if cfg.se is None else cfg.se
    if se > n:
        log(f"note: --se {se} is beyond the last subject (there are {n}); processing indices {cfg.sb}..{n - 1}")
        se = n
    return fmt, subjects[cfg.sb:se]


def _finished_output_problem(out_path: str, src: SubjectSource) -> str | None:
    """Why an existing output cannot count as this subject's finished result (None: it can)."""
    try:
        with h5py.File(out_path, "r") as f:
            layout.validate_file(f, out_path)
            source = str(f.attrs.get("source_file", "")) or None
    except (OSError, layout.DataFormatError, ValueError, KeyError) as exc:
        return f"unreadable ({str(exc).splitlines()[0][:160]})"
    if source is not None and source != src.name:
        return f"written from another input ({source!r}, not {src.name!r})"
    return None


def _process_one(task) -> dict:
    """Process and write one subject (runs in the main process or a worker). Never raises."""
    src, save_dir, opts, overwrite = task
    queue = _WORKER_QUEUE
    out_path = os.path.join(save_dir, layout.subject_file_name(src.subject_id))
    res = {"name": src.name, "subject_id": src.subject_id, "notes": [], "status": "written"}
    if os.path.exists(out_path) and not overwrite:
        problem = _finished_output_problem(out_path, src)
        if problem is None:
            res["status"] = "skipped"
            return res
        res["notes"].append(f"note: {out_path} is {problem}; processing {src.name} again")
    if os.path.exists(partial_path(out_path)):
        res["notes"].append(f"note: {partial_path(out_path)} is left over from an interrupted run; replacing it")
    on_image = (lambda: queue.put(1)) if queue is not None else _MAIN_PROGRESS.update_one
    t0 = time.time()
    try:
        with SubjectFileWriter(out_path) as writer:  # images stream into <out>.partial; renamed when complete
            rows = PROCESSORS[src.fmt](src.path, src.subject_id, opts, on_image, image_store=writer.create_images)
            writer.finish(rows.data, rows.code_slices, rows.source, src.subject_id, rows.attrs)
    except InputError as exc:
        res.update(status="failed", message=str(exc))
        return res
    except (OSError, ValueError, RuntimeError) as exc:  # anything else: one line, the run goes on
        res.update(status="failed", message=f"{src.path}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
        return res
    res["notes"] += rows.notes
    res.update(rows=len(rows.data["valid_mask"]), valid=int(rows.data["valid_mask"].sum()), invalid=dict(rows.invalid),
               stats=dict(rows.stats, seconds=time.time() - t0))
    return res


class _Progress:
    bar = None

    def update_one(self):
        if self.bar is not None:
            self.bar.update(1)


_MAIN_PROGRESS = _Progress()


_WORKER_QUEUE = None  # set in worker processes: image counts for the parent's progress bar


def _die_with_parent(parent_pid: int) -> None:
    """Ask Linux to SIGKILL this process when its parent dies (kill -9 of the run leaves no workers)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def _worker_init(queue, parent_pid: int):
    global _WORKER_QUEUE
    _die_with_parent(parent_pid)
    _WORKER_QUEUE = queue
    import torch

    torch.set_num_threads(1)


def _count_images(src: SubjectSource) -> int:
    try:
        if src.fmt == "images":
            return len(readers.list_photos(src.path))
        import h5py

        with h5py.File(src.path, "r") as f:
            return int(f["face_patch"].shape[0]) if "face_patch" in f else 0
    except (OSError, KeyError, ValueError):
        return 0


def _common_patch_size(subjects: list[SubjectSource], log) -> int | None:
    """The first subject's patch size when the h5 inputs mix sizes (with a note), else None (each keeps its own)."""
    sizes = {}
    for s in subjects:
        try:
            with h5py.File(s.path, "r") as f:
                if "face_patch" in f and f["face_patch"].ndim == 4:
                    sizes[s.name] = int(f["face_patch"].shape[1])
        except OSError:
            pass
    if len(set(sizes.values())) <= 1:
        return None
    first = next(iter(sizes.values()))
    log(f"note: mixed patch sizes {sorted(set(sizes.values()))}; all subjects are written at {first} px "
        f"(the first subject's; set --image_size to choose)")
    return first


def run(cfg: PreprocessConfig, log=None) -> RunSummary:
    """Run the preprocessing; see the module docstring. Raises InputError only when nothing can be done
    (including another run holding save_dir)."""
    log = log or (lambda msg: tqdm.write(msg, file=sys.stderr))
    os.makedirs(cfg.save_dir, exist_ok=True)
    try:
        lock = RunLock(cfg.save_dir, "preprocessing run").acquire()
    except RunLockError as exc:
        raise InputError(str(exc)) from None
    try:
        return _run_locked(cfg, log)
    finally:
        lock.release()


def _run_locked(cfg: PreprocessConfig, log) -> RunSummary:
    t0 = time.time()
    fmt, subjects = select_subjects(cfg, log)
    official = read_official_split(cfg.split_file) if cfg.split_file else None
    opts = ProcessOptions(image_size=cfg.image_size, chunk_rows=cfg.chunk_rows,
                          photo_focal_factor=cfg.photo_focal_factor, fit_codes=cfg.fit_codes,
                          fit_appearance=cfg.fit_appearance)
    if fmt != "images" and cfg.image_size is None:  # mixed patch sizes: one size for the whole folder
        opts.image_size = _common_patch_size(subjects, log)
    summary = RunSummary()
    total_images = sum(_count_images(s) for s in subjects)
    sub_bar = tqdm(total=len(subjects), desc="subjects", unit="subject", disable=not cfg.progress, position=0)
    img_bar = tqdm(total=total_images, desc="images", unit="img", disable=not cfg.progress, position=1)

    def collect(res):
        for note in res["notes"]:
            log(note)
        if res["status"] == "skipped":
            summary.skipped.append(res["subject_id"])
            log(f"skip: {res['name']} -> {layout.subject_file_name(res['subject_id'])} already done")
            img_bar.update(_count_images(next(s for s in subjects if s.subject_id == res["subject_id"])))
        elif res["status"] == "failed":
            summary.failed[res["name"]] = res["message"]
            log(f"error: {res['message']} (subject skipped)")
        else:
            summary.written.append(res["subject_id"])
            if res["valid"] == 0:
                summary.no_face.append(res["name"])
            summary.rows += res["rows"]
            summary.valid_rows += res["valid"]
            summary.invalid.update(res["invalid"])
            summary.stats[res["subject_id"]] = res["stats"]
        sub_bar.update(1)

    if cfg.num_workers <= 1 or len(subjects) <= 1:
        _MAIN_PROGRESS.bar = img_bar
        try:
            for s in subjects:
                sub_bar.set_postfix_str(s.name)
                collect(_process_one((s, cfg.save_dir, opts, cfg.overwrite)))
        finally:
            _MAIN_PROGRESS.bar = None
    else:
        ctx = mp.get_context("spawn")
        queue = ctx.Queue()  # handed to the workers at start-up (no manager process that could outlive us)
        stop = threading.Event()

        def drain():
            import queue as queue_mod

            while not stop.is_set() or not queue.empty():
                with contextlib.suppress(queue_mod.Empty, EOFError, OSError):
                    img_bar.update(queue.get(timeout=0.2))

        th = threading.Thread(target=drain, daemon=True)
        th.start()
        try:
            with ctx.Pool(cfg.num_workers, initializer=_worker_init, initargs=(queue, os.getpid())) as pool:
                tasks = [(s, cfg.save_dir, opts, cfg.overwrite) for s in subjects]
                for res in pool.imap_unordered(_process_one, tasks):
                    collect(res)
        finally:
            stop.set()
            th.join(timeout=5)
            queue.close()
    sub_bar.close()
    img_bar.close()
    summary.split = build_split(cfg.save_dir, official, log=log)
    summary.seconds = time.time() - t0
    return summary
