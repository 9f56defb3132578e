"""Nothing a command does destroys data it did not create (issue 24, items 1, 2, 5, 6, 7, 11, 12).

Each case runs `python -m autojudge.cli ...` in a subprocess, as a user would, and compares the
checksums of every file beside the output before and after: a refusal is one line, a non-zero
exit, before any model loads, and changes nothing; a command that runs changes only its output.

- `--overwrite` (infer, export) replaces only an earlier output of the same command;
- `export` builds in a staging folder of its own (never a user's `OUT.partial`);
- an output is never an input (same file through a link or a hard link), nor inside a mining or
  judge folder, nor one of a run folder's own entries;
- `mine` writes only into a folder it made (recognised by its manifest); `train`/`export` read only those;
- judges are written atomically, and a cut LightGBM model is refused before LightGBM reads it;
- a full disk is "no space left on DIR", keeping what was finished (a 1 MB tmpfs: root only);
- a dangling symbolic link as an output is refused up front.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from tests.helpers import tree_checksums, write_mining_folder

ROOT = Path(__file__).resolve().parents[1]


def run_cli(argv: list[str], timeout: float = 300) -> tuple[int, str, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    for name in ("RAY_ADDRESS", "AUTOJUDGE_DEBUG"):
        env.pop(name, None)
    done = subprocess.run([sys.executable, "-m", "autojudge.cli", *argv], capture_output=True, text=True,
                          env=env, timeout=timeout, cwd=ROOT)
    return done.returncode, done.stdout, done.stderr


def assert_refused(argv: list[str], pattern: str, after_work: bool = False) -> str:
    """One line on stderr matching `pattern`, a non-zero exit, no traceback; unless `after_work` (a
    full disk is found while writing), the only line: no model loaded (their progress bars), no Ray."""
    rc, out, err = run_cli(argv)
    assert rc != 0, f"accepted: {argv}\n{out}\n{err}"
    assert "Traceback" not in out + err and "unexpected" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines[-1].startswith(f"autojudge {argv[0]}: error:") and (after_work or len(lines) == 1), err
    assert re.search(pattern, lines[-1]), f"{pattern!r} not in {lines[-1]}"
    assert after_work or "Started a local Ray instance" not in out + err
    return lines[-1]


def write_judge(folder: Path, target_hidden: int = 16, coef: float = 0.01) -> Path:
    """A logistic-regression judge (DT features) for the synthetic pair of `write_mining_folder`."""
    import numpy as np

    from autojudge.judge import Judge, PairInfo

    pair = PairInfo("synthetic:target", "synthetic:draft", "0123456789abcdef", target_hidden, 8)
    judge = Judge("logreg", "DT", pair, scaler_mean=np.zeros(target_hidden), scaler_scale=np.ones(target_hidden),
                  coef=np.full(target_hidden, coef), intercept=-2.0)
    return judge.save(folder)


def write_infer_output(folder: Path) -> Path:
    """What `autojudge infer` leaves in its output folder: Parquet shards of the decode stage's schema + _summary.json."""
    import pyarrow.parquet as pq

    from autojudge.actors.decoder import output_schema

    folder.mkdir(parents=True)
    pq.write_table(output_schema().empty_table(), folder / "0a1b2c_000000-0.parquet")
    (folder / "_summary.json").write_text(json.dumps({"rows": 0}))
    return folder


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A run folder (mined/, judge/, summary.json, report.md), a mining folder, an export of it, an
    infer output and a prompts file."""
    from autojudge.pipeline.export import ExportConfig, export_dataset
    from autojudge.toy.world import generate_problems

    base = tmp_path_factory.mktemp("never-lost")
    w = {"base": base}
    run = base / "run"
    write_mining_folder(run / "mined", num_prompts=12)
    write_judge(run / "judge")
    (run / "summary.json").write_text("{}\n")
    (run / "report.md").write_text("# autojudge run\n")
    w["run"] = run
    w["mined"] = write_mining_folder(base / "mined", num_prompts=12)
    w["export"] = export_dataset(ExportConfig(data=w["mined"], out=base / "export", readable=False)).out
    w["infer_out"] = write_infer_output(base / "infer-out")
    w["prompts"] = base / "prompts.jsonl"
    w["prompts"].write_text("".join(json.dumps(r) + "\n" for r in generate_problems(2, 2)))
    return w


def copy_of(source: Path, target: Path) -> Path:
    shutil.copytree(source, target, symlinks=True) if source.is_dir() else shutil.copy(source, target)
    return target


# --------------------------------------------------------------------- 1. --overwrite removes only its own output


def workspace_with_a_run(w: dict[str, Path], tmp_path: Path) -> Path:
    """The issue's case: a folder holding a run folder and a user's notes."""
    wsp = tmp_path / "wsp"
    copy_of(w["run"], wsp / "RUN")
    (wsp / "notes.txt").write_text("notes\n")
    return wsp


def deep_user_file(w: dict[str, Path], tmp_path: Path) -> Path:
    wsp = tmp_path / "wsp"
    (wsp / "a" / "b").mkdir(parents=True)
    (wsp / "a" / "b" / "notes.txt").write_text("notes\n")
    return wsp


def export_with_a_user_file(w: dict[str, Path], tmp_path: Path) -> Path:
    wsp = copy_of(w["export"], tmp_path / "wsp")
    (wsp / "labels" / "mine.parquet").write_bytes(b"PAR1 the user's PAR1")
    return wsp


OVERWRITE_CASES: list[tuple[str, str, Callable[[dict[str, Path], Path], Path], str]] = [
    ("infer", "a run and notes", workspace_with_a_run,
     r"holds what `autojudge infer` did not write: a judge \(RUN/judge/judge\.json\), mined data \(RUN/mined/manifest\.json\), notes\.txt"),
    ("export", "a run and notes", workspace_with_a_run,
     r"holds what `autojudge export` did not write: a judge \(RUN/judge/judge\.json\), mined data \(RUN/mined/manifest\.json\), notes\.txt"),
    ("infer", "a file two levels down", deep_user_file, r"did not write: a/b/notes\.txt;"),
    ("export", "a file two levels down", deep_user_file, r"did not write: a/b/notes\.txt;"),
    ("infer", "an export", lambda w, tmp: copy_of(w["export"], tmp / "wsp"), r"a dataset card \(README\.md\)"),
    ("export", "an infer output", lambda w, tmp: copy_of(w["infer_out"], tmp / "wsp"), r"an infer output \(_summary\.json\)"),
    ("export", "an export plus a user file in labels/", lambda w, tmp: export_with_a_user_file(w, tmp), r"labels/mine\.parquet"),
    ("infer", "a mining folder", lambda w, tmp: copy_of(w["mined"], tmp / "wsp"), r"mined data \(manifest\.json\)"),
]


@pytest.mark.parametrize("case", OVERWRITE_CASES, ids=[f"{c[0]}-{c[1]}" for c in OVERWRITE_CASES])
def test_overwrite_refuses_a_folder_holding_anything_else(world: dict[str, Path], tmp_path: Path, case: Any) -> None:
    command, _, make, pattern = case
    wsp = make(world, tmp_path)
    before = tree_checksums(tmp_path)
    if command == "infer":
        argv = ["infer", "--input", str(world["prompts"]), "--output", str(wsp), "--overwrite"]
    else:
        argv = ["export", "--data", str(world["mined"]), "--out", str(wsp), "--overwrite"]
    assert_refused(argv, pattern)
    assert tree_checksums(tmp_path) == before


def test_overwrite_replaces_an_earlier_output_of_the_same_command(world: dict[str, Path], tmp_path: Path) -> None:
    """export --overwrite of an export (with its save_to_disk copies); infer's own output is emptied, and only that."""
    from autojudge.pipeline.infer import check_output_overwrite, prepare_output

    out = tmp_path / "export"
    for extra in ([], ["--overwrite"]):
        rc, _, err = run_cli(["export", "--data", str(world["mined"]), "--out", str(out), "--no-text", "--save-to-disk", *extra])
        assert rc == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]  # no staging or old folder left
    infer_out = copy_of(world["infer_out"], tmp_path / "infer-out")
    check_output_overwrite(str(infer_out))
    prepare_output(str(infer_out), overwrite=True)
    assert list(infer_out.iterdir()) == []


# --------------------------------------------------------------------- 2. export's staging folder is its own


def test_export_keeps_a_users_partial_folder(world: dict[str, Path], tmp_path: Path) -> None:
    partial = tmp_path / "out.partial"
    partial.mkdir()
    (partial / "kept.txt").write_text("the user's\n")
    before = tree_checksums(partial)
    rc, _, err = run_cli(["export", "--data", str(world["mined"]), "--out", str(tmp_path / "out"), "--no-text"])
    assert rc == 0, err
    assert tree_checksums(partial) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "out.partial"]


# --------------------------------------------------------------------- 5. an output is never an input or another command's folder


def output_cases() -> list[tuple[str, Callable[[dict[str, Path], Path], list[str]], str]]:
    def decode(output: Callable[[dict[str, Path], Path], Path]) -> Callable[[dict[str, Path], Path], list[str]]:
        return lambda w, tmp: ["decode", "--task", "toy", "--input", str(tmp / "prompts.jsonl"), "--output", str(output(w, tmp))]

    def hogwild(output: Callable[[dict[str, Path], Path], Path]) -> Callable[[dict[str, Path], Path], list[str]]:
        return lambda w, tmp: ["hogwild", "--task", "toy", "--input", str(tmp / "prompts.jsonl"), "--output", str(output(w, tmp))]

    def symlink(w: dict[str, Path], tmp: Path) -> Path:
        (tmp / "link.jsonl").symlink_to(tmp / "prompts.jsonl")
        return tmp / "link.jsonl"

    def hardlink(w: dict[str, Path], tmp: Path) -> Path:
        os.link(tmp / "prompts.jsonl", tmp / "hard.jsonl")
        return tmp / "hard.jsonl"

    return [
        ("decode-output-is-input", decode(lambda w, tmp: tmp / "prompts.jsonl"), r"--output .* is the same file as --input"),
        ("decode-output-links-to-input", decode(symlink), r"is the same file as --input"),
        ("decode-output-hard-link-of-input", decode(hardlink), r"is the same file as --input"),
        ("hogwild-output-is-input", hogwild(lambda w, tmp: tmp / "prompts.jsonl"), r"is the same file as --input"),
        ("decode-output-mining-manifest", decode(lambda w, tmp: tmp / "run" / "mined" / "manifest.json"),
         r"manifest\.json is inside a mining folder"),
        ("decode-output-in-labels", decode(lambda w, tmp: tmp / "run" / "mined" / "labels" / "out.jsonl"),
         r"is inside a mining folder"),
        ("decode-output-in-judge", decode(lambda w, tmp: tmp / "run" / "judge" / "judge.json"), r"is inside a judge folder"),
        ("decode-output-run-report", decode(lambda w, tmp: tmp / "run" / "report.md"), r"would write into the run folder"),
        ("decode-output-run-eval", decode(lambda w, tmp: tmp / "run" / "eval" / "out.jsonl"), r"would write into the run folder"),
        ("hogwild-output-mining-manifest", hogwild(lambda w, tmp: tmp / "run" / "mined" / "manifest.json"),
         r"is inside a mining folder"),
        ("toy-out-mining-manifest", lambda w, tmp: ["toy", "--num", "2", "--out", str(tmp / "run" / "mined" / "manifest.json")],
         r"is inside a mining folder"),
    ]


@pytest.mark.parametrize("case", output_cases(), ids=[c[0] for c in output_cases()])
def test_an_output_never_replaces_an_input_or_another_commands_files(world: dict[str, Path], tmp_path: Path, case: Any) -> None:
    _, argv, pattern = case
    copy_of(world["prompts"], tmp_path / "prompts.jsonl")
    copy_of(world["run"], tmp_path / "run")
    argv = argv(world, tmp_path)
    before = tree_checksums(tmp_path)
    assert_refused(argv, pattern)
    assert tree_checksums(tmp_path) == before


# --------------------------------------------------------------------- 6. a mining folder is recognised by its manifest


MINE = ["mine", "--target", "toy:target", "--draft", "toy:draft", "--workers", "0", "--limit", "1", "--max-new-tokens", "8",
        "--no-progress"]


def user_parquet_in_labels(w: dict[str, Path], tmp: Path) -> Path:
    (tmp / "u" / "labels").mkdir(parents=True)
    (tmp / "u" / "labels" / "mydata.parquet").write_bytes(b"PAR1 the user's PAR1")
    return tmp / "u"


def mining_folder_with_a_user_file(w: dict[str, Path], tmp: Path) -> Path:
    folder = copy_of(w["mined"], tmp / "u")
    (folder / "labels" / "mydata.parquet").write_bytes(b"PAR1 the user's PAR1")
    return folder


MINE_CASES = [
    ("a user's parquet in labels/", user_parquet_in_labels, r"is not a mining folder \(no manifest\.json .*labels/mydata\.parquet"),
    ("an export", lambda w, tmp: copy_of(w["export"], tmp / "u"), r"is not a mining folder .*a dataset card \(README\.md\)"),
    ("a mining folder holding a user's file", mining_folder_with_a_user_file,
     r"holds what `autojudge mine` did not write: labels/mydata\.parquet"),
]


@pytest.mark.parametrize("case", MINE_CASES, ids=[c[0] for c in MINE_CASES])
def test_mine_writes_only_into_a_folder_it_made(world: dict[str, Path], tmp_path: Path, case: Any) -> None:
    _, make, pattern = case
    out = make(world, tmp_path)
    before = tree_checksums(tmp_path)
    assert_refused([*MINE, "--out", str(out)], pattern)
    assert tree_checksums(tmp_path) == before


def test_orphan_clean_up_removes_only_the_miners_files(tmp_path: Path) -> None:
    from autojudge.pipeline import shards

    write_mining_folder(tmp_path, num_prompts=4, shards=1)
    (tmp_path / "labels" / "mydata.parquet").write_bytes(b"the user's")  # no responses sibling, not a shard name
    (tmp_path / "labels" / ".notes.tmp").write_bytes(b"the user's")
    assert shards.clean_orphans(tmp_path) == []
    assert (tmp_path / "labels" / "mydata.parquet").exists() and (tmp_path / "labels" / ".notes.tmp").exists()


@pytest.mark.parametrize("command", ["train", "export"])
def test_an_export_is_not_read_as_mined_data(world: dict[str, Path], tmp_path: Path, command: str) -> None:
    before = tree_checksums(world["export"])
    assert_refused([command, "--data", str(world["export"]), "--out", str(tmp_path / "out")],
                   r"--data .*export is not a mining folder: it has no manifest\.json of `autojudge mine` "
                   r"\(it looks like an `autojudge export` output")
    assert tree_checksums(world["export"]) == before and not (tmp_path / "out").exists()


# --------------------------------------------------------------------- 7. judges are written atomically, and checked before LightGBM


def test_judge_save_writes_through_temporary_files(tmp_path: Path) -> None:
    from autojudge.judge import Judge

    folder = write_judge(tmp_path / "judge")
    weights = (folder / "weights.safetensors").stat()
    judge = Judge.load(folder)
    for tau in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6):  # safetensors orders its header's metadata differently from save to save
        judge.set_default_threshold(tau, "test", window=4)
        judge.save(folder)  # the same weights: only judge.json is renamed in
        assert (folder / "weights.safetensors").stat().st_ino == weights.st_ino
    write_judge(folder, coef=0.02)  # new weights are renamed over the old ones (a new file), not written into them
    assert (folder / "weights.safetensors").stat().st_ino != weights.st_ino
    assert sorted(p.name for p in folder.iterdir()) == ["judge.json", "weights.safetensors"]
    assert float(Judge.load(folder).coef[0]) == pytest.approx(0.02)


@pytest.fixture(scope="module")
def lightgbm_judge(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from autojudge.pipeline.dataset import read_mined
    from autojudge.pipeline.train import TrainConfig, train_judge

    base = tmp_path_factory.mktemp("lightgbm")
    judge = train_judge(read_mined(write_mining_folder(base / "mined")), TrainConfig(model="lightgbm", feature_setup="DT"))
    return judge.save(base / "judge")


def test_a_cut_lightgbm_model_is_refused_before_lightgbm_reads_it(lightgbm_judge: Path, tmp_path: Path) -> None:
    """Every truncation of model.txt (LightGBM aborts the process on many of them, exit 134): in a
    subprocess, so that an abort fails the test instead of killing pytest."""
    script = f"""
import shutil
from pathlib import Path
from autojudge.judge_format import JudgeFormatError, check_judge_folder
source, folder = Path({str(lightgbm_judge)!r}), Path({str(tmp_path / "cut")!r})
shutil.copytree(source, folder)
full = (source / "model.txt").read_bytes()
no_advice = []
for size in range(0, len(full) - 1):
    (folder / "model.txt").write_bytes(full[:size])
    try:
        check_judge_folder(folder)
    except JudgeFormatError as err:
        if "remove the judge folder or retrain it" not in str(err):
            no_advice.append(size)
    else:
        raise SystemExit(f"accepted model.txt cut at {{size}} of {{len(full)}} bytes")
if no_advice:
    raise SystemExit(f"{{len(no_advice)}} cuts refused without the advice, e.g. at {{no_advice[0]}}")
print("all refused")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert done.returncode == 0 and "all refused" in done.stdout, (done.returncode, done.stdout, done.stderr[-2000:])
    cut = copy_of(lightgbm_judge, tmp_path / "judge")
    (cut / "model.txt").write_bytes((lightgbm_judge / "model.txt").read_bytes()[:2000])
    (tmp_path / "prompts.jsonl").write_text(json.dumps({"id": "a", "prompt": "1 + 1 ="}) + "\n")
    assert_refused(["decode", "--mode", "autojudge", "--judge", str(cut), "--input", str(tmp_path / "prompts.jsonl"),
                    "--output", str(tmp_path / "o.jsonl")], r"model\.txt: not a LightGBM model .*remove the judge folder or retrain it")


# --------------------------------------------------------------------- 11. a full disk


def test_a_full_disk_keeps_the_old_file_and_removes_the_half_written_one(tmp_path: Path) -> None:
    """Without a real full disk: ENOSPC raised inside the write (injected), as the kernel would."""
    from autojudge.files import NoSpaceError, atomic_path

    path = tmp_path / "out.jsonl"
    path.write_text("old\n")
    with pytest.raises(NoSpaceError, match=f"no space left on {tmp_path}"):
        with atomic_path(path) as temporary:
            temporary.write_text("half")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"] and path.read_text() == "old\n"


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MB tmpfs mounted at tmp_path/disk (root only), holding `kept.txt`; `fill(disk)` fills it up."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)],
                                           capture_output=True).returncode != 0:
        pytest.skip("needs root to mount a 1 MB tmpfs (the full-disk tests)")
    try:
        (disk / "kept.txt").write_text("kept\n")
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def fill(disk: Path) -> None:
    """Write until the disk is full (unbuffered: nothing is left to flush at close)."""
    handle = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(handle, b"\0" * 4096)
    except OSError as err:
        assert err.errno == errno.ENOSPC
    finally:
        os.close(handle)


def test_decode_on_a_full_disk(full_disk: Path, world: dict[str, Path]) -> None:
    (full_disk / "old.jsonl").write_text("an earlier output\n")
    fill(full_disk)
    before = tree_checksums(full_disk)
    for name in ("old.jsonl", "new.jsonl"):
        assert_refused(["decode", "--task", "toy", "--input", str(world["prompts"]), "--output", str(full_disk / name),
                        "--max-new-tokens", "4", "--threads", "1"], f"no space left on {re.escape(str(full_disk))}", after_work=True)
        assert tree_checksums(full_disk) == before  # the old output kept, no 0-byte new one, no temporary file


def test_export_on_a_full_disk(full_disk: Path, world: dict[str, Path]) -> None:
    fill(full_disk)
    before = tree_checksums(full_disk)
    assert_refused(["export", "--data", str(world["mined"]), "--out", str(full_disk / "out"), "--no-text"],
                   f"no space left on {re.escape(str(full_disk))}", after_work=True)
    assert tree_checksums(full_disk) == before  # no OUT, no staging folder


def test_train_on_a_full_disk(full_disk: Path, world: dict[str, Path]) -> None:
    fill(full_disk)
    before = tree_checksums(full_disk)
    assert_refused(["train", "--data", str(world["mined"]), "--out", str(full_disk / "judge")],
                   f"no space left on {re.escape(str(full_disk))}", after_work=True)
    assert tree_checksums(full_disk) == before  # no empty judge folder


def test_a_judge_rewritten_on_a_full_disk_stays_the_old_judge(full_disk: Path) -> None:
    from autojudge.errors import InputError
    from autojudge.judge import Judge

    folder = write_judge(full_disk / "judge", target_hidden=16)
    fill(full_disk)
    before = tree_checksums(full_disk)
    with pytest.raises(InputError, match=f"no space left on {re.escape(str(full_disk / 'judge'))}"):
        write_judge(full_disk / "judge", target_hidden=4096, coef=0.5)
    assert tree_checksums(full_disk) == before
    assert float(Judge.load(folder).coef[0]) == pytest.approx(0.01)


def test_mine_on_a_full_disk_keeps_the_finished_shards(full_disk: Path, tmp_path: Path) -> None:
    from autojudge.toy.world import generate_problems

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps(r) + "\n" for r in generate_problems(3, 1)))
    mine = ["mine", "--target", "toy:target", "--draft", "toy:draft", "--workers", "0", "--task", "toy", "--input", str(prompts),
            "--max-new-tokens", "8", "--chunk-size", "1", "--no-progress", "--out", str(full_disk / "mined")]
    rc, _, err = run_cli([*mine, "--limit", "1"])
    assert rc == 0, err
    fill(full_disk)
    before = tree_checksums(full_disk)
    assert_refused([*mine, "--limit", "3"], f"no space left on {re.escape(str(full_disk / 'mined'))}", after_work=True)
    assert tree_checksums(full_disk) == before  # the finished shard and its manifest kept, nothing half-written


# --------------------------------------------------------------------- 12. odd paths


def dangling_cases() -> list[tuple[str, Callable[[dict[str, Path], Path], list[str]]]]:
    prompts = lambda w: str(w["prompts"])  # noqa: E731
    return [
        ("decode", lambda w, link: ["decode", "--input", prompts(w), "--output", str(link)]),
        ("decode-below-the-link", lambda w, link: ["decode", "--input", prompts(w), "--output", str(link / "sub" / "o.jsonl")]),
        ("hogwild", lambda w, link: ["hogwild", "--input", prompts(w), "--output", str(link)]),
        ("toy", lambda w, link: ["toy", "--out", str(link)]),
        ("mine", lambda w, link: [*MINE, "--out", str(link)]),
        ("train", lambda w, link: ["train", "--data", str(w["mined"]), "--out", str(link)]),
        ("export", lambda w, link: ["export", "--data", str(w["mined"]), "--out", str(link)]),
        ("infer", lambda w, link: ["infer", "--input", prompts(w), "--output", str(link)]),
        ("eval", lambda w, link: ["eval", "--out", str(link)]),
        ("run", lambda w, link: ["run", "--out", str(link)]),
    ]


@pytest.mark.parametrize("case", dangling_cases(), ids=[c[0] for c in dangling_cases()])
def test_a_dangling_link_as_output_is_refused_up_front(world: dict[str, Path], tmp_path: Path, case: Any) -> None:
    _, argv = case
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "gone" / "target")
    before = tree_checksums(tmp_path)
    assert_refused(argv(world, link), r"link is a symbolic link to .*gone/target, which does not exist")
    assert tree_checksums(tmp_path) == before and not (tmp_path / "gone").exists()


def test_train_out_through_a_link_to_its_data_is_refused(world: dict[str, Path], tmp_path: Path) -> None:
    data = copy_of(world["mined"], tmp_path / "mined")
    (tmp_path / "judge").symlink_to(data)
    before = tree_checksums(tmp_path)
    assert_refused(["train", "--data", str(data), "--out", str(tmp_path / "judge")], r"--out .*judge is the same folder as --data")
    assert tree_checksums(tmp_path) == before
