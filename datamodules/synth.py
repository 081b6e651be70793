"""The synthetic relational video benchmark (the embedded default dataset).

**Which colour flashes first?** Every video shows the *same ingredients*; only their
**temporal order** differs between classes, so no single frame, colour or position tells
the class -- a model has to relate brief events that are far apart in time and space.

Ingredients of a video (``frames`` x ``size`` x ``size``, default 32 x 24 x 24):

* a dark, textured background with a little per-frame noise;
* **distractors**: two small squares in dull colours (grey, brown, teal) drifting and
  bouncing for the whole video;
* **events**: one brief **flash** per class colour -- a square shown for 2 frames -- at a
  random position (flashes kept apart) and in a random 2-frame time slot (all flashes in
  distinct slots, anywhere in the clip). The colours are, in this order, red, green, blue,
  yellow, magenta, white; a benchmark with ``N`` classes uses the first ``N``.

**Class** = the colour of the *first* flash (``red_first``, ``green_first``, ...). Chance
is ``1 / N`` (25 % by default).

**Which colour does the lamp show first?** (``task="blink"``) The colour task with every
flash at one place (a lamp that blinks the class colours in turn): the order of events at one
position, a temporal relation that needs no spatial one.

**Which colour flashes with the marker?** (``task="marker"``) The colour task's flashes, in any
order, and a white square (the marker) shown elsewhere in the frame during exactly one of them:
the class is the colour of that flash. What decides it is a relation between two places in one
frame, which a global view of each frame finds and the order of events does not.

**Which way does the first mover go?** (``task="motion"``) The same video with motion in
place of colour, for motion-only inputs such as optical flow, which cannot see colour: the
events are grey squares of one shade, each moving for 4 frames in its own direction (right,
left, down, up, down-right, up-left; ``N`` classes use the first ``N``), in distinct 4-frame
slots; the class is the direction of the *first* mover (``right_first``, ...). The colour
task's videos, classes and files are unchanged by this option.

Why it needs long-range relations: the flashes of a video are on average ``frames / (N+1)``
frames apart and anywhere in the frame, so deciding that a flash is the first one means
checking that no other flash happened *earlier*, possibly many frames away. The proxy
backbone's convolutions see 10 frames (``VideoResNet.receptive_field``), a third of the
default clip; global average pooling at the end keeps which colours flashed but not when.
An attention block relates all positions at once. On the default data, after 6 epochs on
2 CPU cores, the proxy reaches 36 / 52 % validation accuracy without attention and 52 / 70 %
with non-local blocks (two seeds; ``benchmarks/results/learnability.md``).

Files: ``out/<class>/<class>_<i>.mp4`` (H.264, yuv420p, CRF 10, one keyframe; squares at
even coordinates so 4:2:0 chroma keeps their colour), ``out/train.txt`` / ``val.txt`` /
``test.txt`` (``<class>/<file> <class>`` lines; 70 / 15 / 15 % of every class) and
``out/meta.json`` (parameters, classes, counts) -- written last, so its presence means the
folder is complete. Every video is rendered from its own RNG ``(seed, class, index)``: the
output is the same whatever the number of processes, and an interrupted run resumes where
it stopped (writes are atomic: temp file + rename).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import av
import numpy as np

from .atomic import atomic_path, atomic_write_text

__all__ = ["DEFAULTS", "GENERATOR_VERSION", "COLOURS", "DIRECTIONS", "TASKS", "EVENTS",
           "SynthError", "class_names", "class_colours", "class_directions", "render_video",
           "write_video", "ensure_synthetic", "classes_markdown", "synthetic_clip_problems",
           "check_params"]

GENERATOR_VERSION = 2
DEFAULTS: dict[str, int] = {"classes": 4, "videos_per_class": 1500, "frames": 32, "size": 24,
                            "seed": 0}
SPLITS = (("train", 0.70), ("val", 0.15), ("test", 0.15))
FPS = 15
CRF = 10

#: flash colours, in the order classes use them
COLOURS: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("red", (235, 35, 35)), ("green", (35, 215, 35)), ("blue", (40, 70, 245)),
    ("yellow", (240, 230, 30)), ("magenta", (240, 40, 220)), ("white", (250, 250, 250)),
)
#: distractor colours: dull, none close to a flash colour
DISTRACTOR_COLOURS = ((120, 120, 120), (110, 70, 40), (60, 110, 110))
NUM_DISTRACTORS = 2
MAX_CLASSES = len(COLOURS)
#: what decides the class: the first flash's colour (the default) or the first mover's direction
TASKS = ("colour", "motion", "blink", "marker")
#: the marker task's marker colour (a flash colour no marker-task class uses)
MARKER_COLOUR = COLOURS[-1][1]
#: how many events a video shows: one per class (``all``) or 1 to ``classes`` (``graded``)
EVENTS = ("all", "graded")
#: the motion task's directions (dy, dx), in the order classes use them
DIRECTIONS: tuple[tuple[str, tuple[int, int]], ...] = (
    ("right", (0, 1)), ("left", (0, -1)), ("down", (1, 0)), ("up", (-1, 0)),
    ("down_right", (1, 1)), ("up_left", (-1, -1)),
)
MOVE_FRAMES = 4  # frames a mover is shown (it moves between each)
MOVER_GREY = (200, 200, 200)


class SynthError(RuntimeError):
    """The output folder cannot be used (holds something else, or other parameters)."""


# ---------------------------------------------------------------------------- classes
def _check(classes: int, videos_per_class: int, frames: int, size: int, seed: int,
           task: str = "colour", events: str = "all") -> None:
    if task not in TASKS:
        raise ValueError(f"--task must be one of {', '.join(TASKS)}, got {task!r}")
    if events not in EVENTS:
        raise ValueError(f"--events must be one of {', '.join(EVENTS)}, got {events!r}")
    if task == "motion" and frames < MOVE_FRAMES * classes:
        raise ValueError(f"--frames must be >= {MOVE_FRAMES * classes} for the motion task "
                         f"with {classes} classes ({classes} movers of {MOVE_FRAMES} frames "
                         f"in distinct slots), got {frames}")
    most = MAX_CLASSES - 1 if task == "marker" else MAX_CLASSES  # white is the marker
    if not 2 <= classes <= most:
        raise ValueError(f"--classes must be between 2 and {most} for the {task} task, got "
                         f"{classes}")
    if videos_per_class < 3:
        raise ValueError(f"--videos-per-class must be >= 3 (train/val/test), got "
                         f"{videos_per_class}")
    if frames < 2 * classes or frames > 1024:
        raise ValueError(f"--frames must be in [{2 * classes}, 1024] for {classes} classes "
                         f"({classes} flashes of 2 frames in distinct slots), got {frames}")
    if size < 16 or size > 1024 or size % 2:
        raise ValueError(f"--size must be an even number in [16, 1024], got {size}")
    if seed < 0:
        raise ValueError(f"--seed must be >= 0, got {seed}")


def check_params(classes: int, videos_per_class: int, frames: int, size: int, seed: int,
                 task: str = "colour", events: str = "all") -> None:
    """Raise ``ValueError`` (naming the parameter and its range) unless every generator
    parameter is valid."""
    _check(classes, videos_per_class, frames, size, seed, task, events)


def class_colours(classes: int = DEFAULTS["classes"]) -> list[str]:
    """The colour of each class's first flash, in class index order (sorted names)."""
    return sorted(name for name, _ in COLOURS[:classes])


def class_directions(classes: int = DEFAULTS["classes"]) -> list[str]:
    """The motion task's direction of each class's first mover, in class index order."""
    return sorted(name for name, _ in DIRECTIONS[:classes])


def class_names(classes: int = DEFAULTS["classes"], task: str = "colour",
                **_: object) -> list[str]:
    """Class names in index order (sorted), e.g. ``["blue_first", "green_first", ...]``
    (the motion task: ``["down_first", "left_first", ...]``; the marker task:
    ``["blue_marked", ...]``)."""
    keys = class_directions(classes) if task == "motion" else class_colours(classes)
    return [f"{c}_{'marked' if task == 'marker' else 'first'}" for c in keys]


def classes_markdown(classes: int = DEFAULTS["classes"], task: str = "colour") -> str:
    """A markdown description of the classes (pasted into README)."""
    if task == "motion":
        dirs = [name for name, _ in DIRECTIONS[:classes]]
        lines = ["**Which way does the first mover go?** Every video holds the same "
                 f"ingredients: {classes} grey squares of one shade, each moving for "
                 f"{MOVE_FRAMES} frames in its own direction ({', '.join(dirs)}), in distinct "
                 "random time slots; two dull drifting squares (distractors); a noisy "
                 "textured background. The class is the direction of the **first** mover.",
                 "", "| index | class | meaning |", "|---:|---|---|"]
        for i, d in enumerate(class_directions(classes)):
            lines.append(f"| {i} | `{d}_first` | a square moves {d.replace('_', '-')} "
                         "before the others move |")
        return "\n".join(lines) + "\n"
    colours = [name for name, _ in COLOURS[:classes]]
    if task == "marker":
        lines = ["**Which colour flashes with the marker?** Every video holds the same "
                 f"ingredients: {classes} brief flashes (a square shown for 2 frames), one of "
                 f"each colour ({', '.join(colours)}), at random, well separated positions "
                 "and in distinct random time slots; a white square (the marker) shown "
                 "elsewhere during exactly one flash; two dull drifting squares "
                 "(distractors); a noisy textured background. The class is the colour of the "
                 "flash the marker **accompanies**.", "",
                 "| index | class | meaning |", "|---:|---|---|"]
        for i, colour in enumerate(class_colours(classes)):
            lines.append(f"| {i} | `{colour}_marked` | the marker is shown while {colour} "
                         "flashes |")
        return "\n".join(lines) + "\n"
    if task == "blink":
        lines = ["**Which colour does the lamp show first?** Every video holds the same "
                 f"ingredients: one lamp at a random place that blinks {classes} colours "
                 f"({', '.join(colours)}), each for 2 frames, in distinct random time slots; "
                 "two dull drifting squares (distractors); a noisy textured background. The "
                 "class is the lamp's **first** colour.", "",
                 "| index | class | meaning |", "|---:|---|---|"]
        for i, colour in enumerate(class_colours(classes)):
            lines.append(f"| {i} | `{colour}_first` | the lamp shows {colour} before the "
                         "other colours |")
        return "\n".join(lines) + "\n"
    lines = [
        "**Which colour flashes first?** Every video holds the same ingredients: "
        f"{classes} brief flashes (a square shown for 2 frames), one of each colour "
        f"({', '.join(colours)}), at random, well separated positions and in distinct "
        "random time slots anywhere in the clip; two dull squares drifting and bouncing for "
        "the whole clip (distractors); a noisy textured background. The class is the colour "
        "of the **first** flash, so no frame, colour or position tells it: a model must "
        "relate brief events far apart in time (the proxy's convolutions see 10 frames of "
        f"the default {DEFAULTS['frames']}) and space.",
        "",
        "| index | class | meaning |",
        "|---:|---|---|",
    ]
    for i, colour in enumerate(class_colours(classes)):
        others = ", ".join(c for c in colours if c != colour)
        lines.append(f"| {i} | `{colour}_first` | {colour} flashes before {others} |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- rendering
def _square(frame: np.ndarray, y: float, x: float, s: int, colour: tuple[int, ...]) -> None:
    h, w = frame.shape[:2]
    y0, x0 = int(round(y)), int(round(x))
    frame[max(y0, 0):max(min(y0 + s, h), 0), max(x0, 0):max(min(x0 + s, w), 0)] = colour


def _scene(t: int, s: int, rng: np.random.Generator) -> np.ndarray:
    """``float (t, s, s, 3)``: the textured, noisy background with the drifting distractors."""
    dis = max(2, round(s / 8))  # distractor side (3 px at 24)
    # background: textured, a little temporal noise
    base = rng.uniform(20, 50)
    texture = rng.normal(0.0, 8.0, (s, s, 1))
    video = np.repeat((base + texture)[None], t, 0).repeat(3, -1)
    video += rng.normal(0.0, 3.0, video.shape)
    # distractors: dull squares drifting and bouncing
    lim = s - dis
    for _ in range(NUM_DISTRACTORS):
        colour = DISTRACTOR_COLOURS[rng.integers(len(DISTRACTOR_COLOURS))]
        y, x = rng.uniform(0, lim, 2)
        vy, vx = rng.uniform(-1.2, 1.2, 2) * s / 24
        for f in range(t):
            _square(video[f], y, x, dis, colour)
            y, x = y + vy, x + vx
            if not 0 <= y <= lim:
                vy, y = -vy, float(np.clip(y, 0, lim))
            if not 0 <= x <= lim:
                vx, x = -vx, float(np.clip(x, 0, lim))
    return video


def render_video(class_index: int, classes: int = DEFAULTS["classes"],
                 frames: int = DEFAULTS["frames"], size: int = DEFAULTS["size"],
                 rng: np.random.Generator | None = None, task: str = "colour",
                 events: str = "all") -> np.ndarray:
    """Render one video of class ``class_index``: ``uint8 (frames, size, size, 3)`` RGB
    (``task``: ``colour``, the first flash's colour decides; ``motion``, the first mover's
    direction; ``events``: ``all``, one event per class in every video, or ``graded``,
    1 to ``classes`` events, uniformly)."""
    rng = rng if rng is not None else np.random.default_rng()
    t, s = frames, size
    obj = max(2, 2 * round(s / 12))  # flash / mover side, even (4 px at 24)
    video = _scene(t, s, rng)
    # graded: the number of events is drawn only then, so videos of ``all`` are unchanged
    count = classes if events == "all" else int(rng.integers(1, classes + 1))
    if task == "motion":
        return _add_movers(video, class_index, classes, obj, rng, count)
    names = [name for name, _ in COLOURS[:classes]]
    palette = dict(COLOURS)
    first = class_colours(classes)[class_index]
    # flashes: distinct 2-frame slots; the class colour takes the earliest one
    slots = np.sort(rng.choice(np.arange(0, t - 1, 2), count, replace=False))
    others = [c for c in names if c != first]
    rng.shuffle(others)
    others = others[:count - 1]
    placed: list[np.ndarray] = []
    min_dist = s / 4
    # blink: every flash at one place (the lamp); drawn only then, so colour videos are unchanged
    lamp = rng.integers(0, (s - obj) // 2 + 1, 2) * 2 if task == "blink" else None
    order = [first, *others]
    if task == "marker":  # the class colour at a random slot (drawn only then)
        k = int(rng.integers(count))
        order[0], order[k] = order[k], order[0]
    for colour, when in zip(order, slots.tolist()):
        if lamp is not None:
            pos = lamp
        else:
            pos = _free_place(s, obj, placed, min_dist, rng)
        placed.append(pos)
        for f in (when, when + 1):
            _square(video[f], pos[0], pos[1], obj, palette[colour])
    if task == "marker":
        when = slots[order.index(first)]
        pos = _free_place(s, obj, placed, min_dist, rng)
        for f in (when, when + 1):
            _square(video[f], pos[0], pos[1], obj, MARKER_COLOUR)
    return np.clip(video, 0, 255).astype(np.uint8)


def _free_place(s: int, obj: int, placed: list[np.ndarray], min_dist: float,
                rng: np.random.Generator) -> np.ndarray:
    """A random even ``(y, x)`` for a square of side ``obj`` at least ``min_dist`` from every
    place in ``placed`` (the last draw if 100 draws find none)."""
    for _ in range(100):
        pos = rng.integers(0, (s - obj) // 2 + 1, 2) * 2  # even: chroma-aligned
        if all(np.hypot(*(pos - q)) >= min_dist for q in placed):
            break
    return pos


def _add_movers(video: np.ndarray, class_index: int, classes: int, obj: int,
                rng: np.random.Generator, count: int) -> np.ndarray:
    """The motion task's events on ``video`` (float (t, s, s, 3)), returned as uint8: one grey
    square per direction, each shown for ``MOVE_FRAMES`` frames moving ``speed`` px a frame,
    in distinct slots; the class's direction takes the earliest slot."""
    t, s = video.shape[:2]
    steps = dict(DIRECTIONS)
    first = class_directions(classes)[class_index]
    others = [d for d, _ in DIRECTIONS[:classes] if d != first]
    rng.shuffle(others)
    others = others[:count - 1]
    slots = np.sort(rng.choice(np.arange(0, t - MOVE_FRAMES + 1, MOVE_FRAMES), count,
                               replace=False))
    speed = max(1, round(2 * s / 24))  # 2 px a frame at 24
    travel = speed * (MOVE_FRAMES - 1)
    placed: list[np.ndarray] = []
    for name, when in zip([first, *others], slots.tolist()):
        dy, dx = steps[name]
        lo = np.array([max(0, -dy * travel), max(0, -dx * travel)])
        hi = np.array([s - obj - max(0, dy * travel), s - obj - max(0, dx * travel)])
        for _ in range(100):
            pos = lo + rng.integers(0, hi - lo + 1)
            if all(np.hypot(*(pos - q)) >= s / 4 for q in placed):
                break
        placed.append(pos)
        for k in range(MOVE_FRAMES):
            _square(video[when + k], pos[0] + k * dy * speed, pos[1] + k * dx * speed, obj,
                    MOVER_GREY)
    return np.clip(video, 0, 255).astype(np.uint8)


def write_video(path: str | Path, video: np.ndarray, fps: int = FPS, crf: int = CRF) -> Path:
    """Encode ``uint8 (T, H, W, 3)`` as H.264 MP4 (yuv420p, one keyframe) atomically:
    to a temp file next to ``path``, then renamed. H and W must be even."""
    path = Path(path)
    t, h, w, _ = video.shape
    if h % 2 or w % 2:
        raise ValueError(f"H.264 yuv420p needs even sizes, got {h}x{w}")
    with atomic_path(path) as tmp, av.open(str(tmp), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = w, h
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf), "preset": "ultrafast", "g": str(max(t, 1)),
                          "threads": "1"}
        for frame in video:
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            for packet in stream.encode(vf):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


# ---------------------------------------------------------------------------- the folder
Job = tuple[str, int, int, int, int, int, int, str, str]


def _jobs(out: Path, p: dict[str, Any]) -> list[Job]:
    task = p.get("task", "colour")
    names = class_names(p["classes"], task)
    return [(str(out / name / f"{name}_{i:05d}.mp4"), c, i, p["classes"], p["frames"],
             p["size"], p["seed"], task, p.get("events", "all"))
            for c, name in enumerate(names) for i in range(p["videos_per_class"])]


def _make_one(job: Job) -> str:
    path, c, i, classes, frames, size, seed, task, events = job
    if not os.path.exists(path):
        rng = np.random.default_rng([seed, c, i])
        write_video(path, render_video(c, classes, frames, size, rng, task, events))
    return path


def _split_of(i: int, n: int) -> str:
    n_train = int(round(n * SPLITS[0][1]))
    n_val = int(round(n * SPLITS[1][1]))
    return "train" if i < n_train else "val" if i < n_train + n_val else "test"


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def ensure_synthetic(out: str | Path, classes: int = DEFAULTS["classes"],
                     videos_per_class: int = DEFAULTS["videos_per_class"],
                     frames: int = DEFAULTS["frames"], size: int = DEFAULTS["size"],
                     seed: int = DEFAULTS["seed"], task: str = "colour",
                     events: str = "all", workers: int | None = None, force: bool = False,
                     progress: bool = False,
                     announce: Callable[[str], None] | None = None) -> Path:
    """Generate the synthetic benchmark in ``out`` unless it is already there.

    Args:
        out: output folder (created).
        classes, videos_per_class, frames, size, seed: generator parameters (recorded in
            ``meta.json``; a folder with the same parameters is reused as is).
        task: ``colour`` (default: the first flash's colour is the class), ``blink`` (the
            lamp's first colour), ``marker`` (the colour of the flash the marker
            accompanies) or ``motion`` (the first mover's direction); recorded in
            ``meta.json`` only when not ``colour``, so colour folders made before the
            option are reused.
        events: ``all`` (every video shows one event per class) or ``graded`` (each video
            shows 1 to ``classes`` events, uniformly: the first is still the class, and a
            video with fewer events is easier; recorded only when not ``all``).
        workers: encoder processes (default: CPU count, at most 8).
        force: replace a previous synthetic benchmark with other parameters.
        progress: show a progress bar (rich).
        announce: called with one line saying what is generated where, before a
            generation starts (not when the folder is already complete).

    Returns:
        ``Path(out)``.

    Raises:
        ValueError: a parameter is out of range.
        SynthError: ``out`` holds something that is not a synthetic benchmark, or one with
            other parameters and ``force`` is false.
    """
    params: dict[str, Any] = {"classes": int(classes), "videos_per_class": int(videos_per_class),
                              "frames": int(frames), "size": int(size), "seed": int(seed)}
    _check(**params, task=task, events=events)
    if task != "colour":
        params["task"] = task
    if events != "all":
        params["events"] = events
    out = Path(out)
    meta_path, partial_path = out / "meta.json", out / ".synth-params.json"
    wanted = {"generator_version": GENERATOR_VERSION, "params": params}
    meta = _read_json(meta_path)
    if meta is not None and {k: meta.get(k) for k in wanted} == wanted:
        if all((out / f"{s}.txt").is_file() for s, _ in SPLITS):
            return out
    if out.exists() and any(out.iterdir()):
        ours = meta is not None or partial_path.exists()
        partial = _read_json(partial_path)
        resumable = meta is None and partial == wanted
        if not ours:
            raise SynthError(f"{out} exists and is not a synthetic benchmark folder (no "
                             "meta.json); choose another output folder")
        if not resumable:
            if not force:
                have = meta or partial or {}
                what = (f"generator version {have.get('generator_version')} (this is "
                        f"{GENERATOR_VERSION})" if have.get("params") == params
                        else f"other parameters ({have.get('params')})")
                raise SynthError(f"{out} holds a synthetic benchmark made with {what}; use "
                                 "--force (force=True) to replace it, or another folder")
            shutil.rmtree(out)
    if announce is not None:
        n = params["classes"] * params["videos_per_class"]
        mb = 94 * n / 6000 * params["frames"] / 32 * (params["size"] / 24) ** 2
        announce(f"generating the synthetic benchmark into {out.resolve()}: {n} videos, "
                 f"about {max(mb, 0.1):.0f} MB (the folder holds no benchmark yet; "
                 "--data.root names another)")
    out.mkdir(parents=True, exist_ok=True)
    meta_path.unlink(missing_ok=True)
    atomic_write_text(partial_path, json.dumps(wanted, indent=2) + "\n")
    names = class_names(params["classes"], task)
    for name in names:
        (out / name).mkdir(exist_ok=True)
    jobs = _jobs(out, params)
    _run_jobs(jobs, workers, progress)
    # lists and meta (meta last: it marks the folder complete)
    n = params["videos_per_class"]
    lines: dict[str, list[str]] = {s: [] for s, _ in SPLITS}
    for path, c, i, *_ in jobs:
        rel = Path(path).relative_to(out).as_posix()
        lines[_split_of(i, n)].append(f"{rel} {names[c]}")
    for s, _ in SPLITS:
        atomic_write_text(out / f"{s}.txt", "\n".join(lines[s]) + "\n")
    meta = {**wanted, "format": "attnas-synthetic", "classes": names,
            "counts": {s: len(v) for s, v in lines.items()}, "fps": FPS,
            "codec": f"h264 (libx264, yuv420p, crf {CRF})",
            "description": classes_markdown(params["classes"], task)}
    atomic_write_text(meta_path, json.dumps(meta, indent=2) + "\n")
    partial_path.unlink(missing_ok=True)
    return out


def _run_jobs(jobs: list, workers: int | None, progress: bool) -> None:
    todo = [j for j in jobs if not os.path.exists(j[0])]
    workers = workers or min(os.cpu_count() or 1, 8)
    bar = None
    if progress:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

        bar = Progress("[progress.description]{task.description}", BarColumn(),
                       MofNCompleteColumn(), TimeElapsedColumn(), transient=False)
        bar.start()
        task = bar.add_task("synthetic videos", total=len(jobs), completed=len(jobs) - len(todo))
    try:
        if workers <= 1 or len(todo) < 64:
            for job in todo:
                _make_one(job)
                if bar is not None:
                    bar.advance(task)
        else:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                for _ in pool.map(_make_one, todo, chunksize=32):
                    if bar is not None:
                        bar.advance(task)
    finally:
        if bar is not None:
            bar.stop()


def synthetic_clip_problems(root: str | Path, num_frames: int, sampling_rate: int,
                            crop_size: int) -> list[str]:
    """Why clips of ``num_frames`` frames at ``sampling_rate``, cropped to ``crop_size``,
    cannot show a whole video of the synthetic benchmark under ``root`` (its class --
    which flash is first -- needs every frame); empty when they can, or when ``root`` is
    not the synthetic benchmark."""
    meta_file = Path(root) / "meta.json"
    if not meta_file.is_file():
        return []
    try:
        meta = json.loads(meta_file.read_text())
    except ValueError:
        return []
    if not isinstance(meta, dict) or meta.get("format") != "attnas-synthetic":
        return []
    p = meta.get("params", {})
    frames, size = p.get("frames"), p.get("size")
    span = (num_frames - 1) * sampling_rate + 1
    out = []
    if frames and span < frames:
        out.append(f"{root}: the synthetic videos have {frames} frames but a clip spans "
                   f"{span} (num_frames={num_frames}, sampling_rate={sampling_rate}); the "
                   f"first flash may fall outside the clip. Use num_frames={frames}, "
                   f"sampling_rate=1.")
    if size and crop_size != size:
        out.append(f"{root}: the synthetic videos are {size}x{size} px but "
                   f"crop_size={crop_size}; use crop_size={size}.")
    return out
