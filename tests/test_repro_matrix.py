"""The reproduction matrix: --table renders it, --check reruns entries and prints OK / FAIL."""

from __future__ import annotations

import json
import time

import pytest
import yaml

from dualist.cli import main
from dualist.repro.matrix import MATRIX_PATH, compare_rows, load_matrix, print_table
from tests.test_repro_e2e import TINY


def test_compare_rows_flags_missing_and_out_of_tolerance():
    rows = [{"id": "bm25", "model": "BM25", "re-rank nDCG@10": 0.50},
            {"id": "m3se", "model": "DE + M3SE", "re-rank nDCG@10": 0.40}]
    expected = {"bm25": {"rerank.ndcg@10": 0.51}, "m3se": {"rerank.ndcg@10": 0.45}, "teacher": {"rerank.ndcg@10": 0.6}}
    got = {(m, c): ok for m, c, _, _, ok in compare_rows(rows, expected, 0.02)}
    assert got == {("bm25", "rerank.ndcg@10"): True, ("m3se", "rerank.ndcg@10"): False,
                   ("teacher", "rerank.ndcg@10"): False}


def test_packaged_matrix_is_valid_and_renders():
    from dualist.report.labels import model_label
    from dualist.repro.matrix import condition_command, condition_id

    matrix = load_matrix(MATRIX_PATH)
    assert matrix["conditions"]
    table = print_table(MATRIX_PATH)
    for cid, cond in matrix["conditions"].items():
        assert cid == condition_id(cond["dataset"], cond["profile"], cond.get("override", ()),
                                   seed=cond.get("seed", 13), seeds=cond.get("seeds", 1), losses=cond.get("losses"))
        assert cond["command"] == condition_command(cond)  # the command that reproduces it, kept in step
        # a reader tells a condition that switched part of the recipe off from a run of the defaults
        assert (f"`--override {','.join(cond['override'])}`" if cond.get("override") else "the defaults") in table
        for model in cond["expected"]:
            assert model_label(model) in table


def test_packaged_conditions_override_only_what_differs_from_their_profile():
    # a condition whose override repeats the profile's default (left behind when a default changed) is the
    # defaults' run under another id: --record of a defaults run would add a second condition beside it
    from dualist.repro.plan import ReproArgs, resolve_profile
    from dualist.repro.profiles import get_profile

    for cid, cond in load_matrix(MATRIX_PATH)["conditions"].items():
        base = get_profile(cond["profile"])
        # resolve_profile parses and checks the overrides as a run would
        resolved = resolve_profile(ReproArgs(profile=cond["profile"], override=list(cond.get("override", ()))))
        for item in cond.get("override", ()):
            key = item.partition("=")[0].strip()
            assert getattr(resolved, key) != getattr(base, key), f"{cid}: {item} is the {cond['profile']} default"


def _results(dataset, override):
    return {"dataset": dataset, "profile": "full", "version": "0", "timings": {"total": 120.0},
            "settings": {"seeds": 1, "override": override},
            "rows": [{"id": "bm25", "model": "BM25", "re-rank nDCG@10": 0.33}]}


def test_record_keeps_a_condition_per_override_list_and_names_the_dataset_not_its_path(tmp_path):
    from dualist.repro.matrix import record_entry

    path = tmp_path / "m.yaml"
    record_entry(_results("/data/beir/nfcorpus", []), path)
    record_entry(_results("/data/beir/nfcorpus", ["in_batch=false", "calibrate=false"]), path)
    conditions = load_matrix(path)["conditions"]
    assert list(conditions) == ["nfcorpus-full", "nfcorpus-full+in_batch=false,calibrate=false"]
    default, ablated = conditions.values()
    assert default["dataset"] == "nfcorpus" and "/data" not in default["command"]
    assert ablated["command"].endswith("--override in_batch=false,calibrate=false")
    assert default["wall_minutes"] == 2.0 and default["expected"]["bm25"]["rerank.ndcg@10"] == 0.33
    # recording the defaults again replaces their entry only
    again = _results("nfcorpus", [])
    again["rows"][0]["re-rank nDCG@10"] = 0.35
    record_entry(again, path)
    conditions = load_matrix(path)["conditions"]
    assert len(conditions) == 2 and conditions["nfcorpus-full"]["expected"]["bm25"]["rerank.ndcg@10"] == 0.35


def test_record_keeps_runs_of_another_base_seed_seed_count_or_loss_list_apart(tmp_path):
    """A run with another base seed, more student seeds or fewer losses is a condition of its own:
    recording it must not replace the defaults' figures, and its command must rerun it as it ran
    (``--check`` compares a seed-14 run's figures with a seed-14 rerun, not with seed 13)."""
    from dualist.repro.matrix import condition_command, record_entry

    path = tmp_path / "m.yaml"
    record_entry(_results("scifact", []), path)
    other = _results("scifact", [])
    other["settings"].update(seeds=3, base_seed=14, losses=["onehot", "kl", "m3se"])
    other["rows"][0]["re-rank nDCG@10"] = 0.40
    record_entry(other, path)
    conditions = load_matrix(path)["conditions"]
    assert list(conditions) == ["scifact-full", "scifact-full@seed=14,seeds=3,losses=onehot+kl+m3se"]
    default, seeded = conditions.values()
    assert default["expected"]["bm25"]["rerank.ndcg@10"] == 0.33 and "seed" not in default
    assert seeded["seed"] == 14 and seeded["seeds"] == 3 and seeded["losses"] == ["onehot", "kl", "m3se"]
    assert seeded["command"] == condition_command(seeded) == (
        "dualist repro --dataset scifact --profile full --seed 14 --seeds 3 --losses onehot,kl,m3se")
    # the base seed alone also tells two runs apart, and overrides come first in the id
    alone = _results("scifact", ["in_batch=false"])
    alone["settings"]["base_seed"] = 15
    record_entry(alone, path)
    assert "scifact-full+in_batch=false@seed=15" in load_matrix(path)["conditions"]
    table = print_table(path)
    assert "1 seed(s), the defaults" in table and "3 seed(s) from base seed 14" in table
    # a loss subset is named, not called "the defaults"
    assert "3 seed(s) from base seed 14, losses onehot, kl, m3se, the defaults otherwise" in table
    assert "`--override in_batch=false`" in table


def test_check_reruns_a_condition_with_its_own_base_seed(tmp_path, monkeypatch):
    import dualist.repro.matrix as matrix_mod
    from dualist.repro.plan import ReproArgs

    path = tmp_path / "m.yaml"
    rows = [{"id": "bm25", "model": "BM25", "re-rank nDCG@10": 0.33}]
    path.write_text(yaml.safe_dump({"conditions": {
        "scifact-full": {"dataset": "scifact", "profile": "full", "command": "-",
                         "expected": {"bm25": {"rerank.ndcg@10": 0.33}}},
        "scifact-full@seed=14": {"dataset": "scifact", "profile": "full", "seed": 14, "command": "-",
                                 "expected": {"bm25": {"rerank.ndcg@10": 0.33}}}}}))
    seen = []
    monkeypatch.setattr(matrix_mod, "run_repro", lambda a: seen.append(a.seed) or {"rows": rows})
    # a --seed given with --check does not move the recorded conditions off their seeds
    matrix_mod.check_matrix(ReproArgs(check=True, matrix=str(path), seed=99))
    assert seen == [13, 14]


def test_a_resumed_run_records_the_minutes_of_every_invocation_or_none(tmp_path, caplog):
    """A folder built over several invocations is timed by all of them (the report's folder total),
    never by the last invocation alone; without that total (a folder older than its timings log) no
    minutes are written rather than wrong ones."""
    from dualist.repro.matrix import record_entry
    from dualist.repro.plan import FOLDER_TOTAL

    resumed = _results("scifact", [])
    resumed["settings"]["resumed work folder"] = True
    resumed["timings"] = {"total": 12.0, FOLDER_TOTAL: 4674.0}
    entry = load_matrix(record_entry(resumed, tmp_path / "a.yaml"))["conditions"]["scifact-full"]
    assert entry["resumed_run_minutes"] == 77.9 and "wall_minutes" not in entry
    del resumed["timings"][FOLDER_TOTAL]
    with caplog.at_level("WARNING"):
        entry = load_matrix(record_entry(resumed, tmp_path / "b.yaml"))["conditions"]["scifact-full"]
    assert "resumed_run_minutes" not in entry and "wall_minutes" not in entry
    assert "minutes are unknown" in caplog.text


def test_the_timings_log_keeps_every_stage_of_every_invocation(tmp_path):
    """Every stage's seconds count, a failed one's too (a resumed stage reuses what it left: scoring
    shards, finished students); each line says whether its stage finished."""
    from dualist.repro.plan import TIMINGS_LOG, _Timer, folder_seconds

    assert folder_seconds(tmp_path) == (0.0, 0, None)
    first = _Timer(tmp_path / TIMINGS_LOG)
    with first.stage("teacher training"):
        pass
    with pytest.raises(RuntimeError), first.stage("teacher scoring"):
        time.sleep(0.02)
        raise RuntimeError("a stage that fails still took its time")
    second = _Timer(tmp_path / TIMINGS_LOG)
    second.started = first.started + "-again"  # two invocations within one clock tick stay apart
    with second.stage("evaluation"):
        time.sleep(0.05)
    ends = [x for x in map(json.loads, (tmp_path / TIMINGS_LOG).read_text().splitlines()) if "seconds" in x]
    assert [(x["stage"], x["finished"]) for x in ends] == [("teacher training", True), ("teacher scoring", False),
                                                           ("evaluation", True)]
    assert "teacher scoring" in first.seconds  # the invocation's own table shows it too
    seconds, invocations, stopped = folder_seconds(tmp_path)
    assert invocations == 2 and stopped is None and seconds >= 0.07
    assert seconds == pytest.approx(sum(x["seconds"] for x in ends))


def test_a_stage_stopped_without_a_trace_leaves_the_folder_minutes_unknown(tmp_path, caplog):
    """A process killed during a stage (a machine stop, SIGKILL) writes no end line; its partial outputs
    are resumed, so its unknown seconds belong to the folder: no total then, rather than a low one. The
    invocation in progress (whose report stage is open while the total is taken) is not such a case."""
    from dualist.repro.plan import FOLDER_TOTAL, TIMINGS_LOG, _Timer, _timings, folder_seconds

    killed = _Timer(tmp_path / TIMINGS_LOG)
    with killed.stage("teacher training"):
        pass
    stage = killed.stage("teacher scoring")
    stage.__enter__()  # ... and the process dies here: no end line
    assert folder_seconds(tmp_path)[2] == "teacher scoring"
    assert folder_seconds(tmp_path, current=killed.started)[2] is None
    resumed = _Timer(tmp_path / TIMINGS_LOG)
    resumed.started = killed.started + "-again"
    with resumed.stage("teacher scoring"):
        pass
    with resumed.stage("diagnostics and report"), caplog.at_level("WARNING"):
        timings = _timings(resumed, tmp_path, resumed=True)
    assert FOLDER_TOTAL not in timings and "teacher scoring" in timings
    assert "stopped during its teacher scoring stage" in caplog.text


def test_a_log_without_start_lines_still_gives_its_total(tmp_path):
    """Folders logged before start lines existed (one line per finished stage) keep their total."""
    from dualist.repro.plan import TIMINGS_LOG, folder_seconds

    (tmp_path / TIMINGS_LOG).write_text('{"invocation": "a", "stage": "teacher training", "seconds": 3.0}\n'
                                        '{"invocation": "b", "stage": "evaluation", "seconds": 2.5}\n')
    assert folder_seconds(tmp_path) == (5.5, 2, None)


def test_record_keeps_hybrid_and_hubness_and_checks_counts_as_shares(tmp_path):
    """The matrix carries the hybrid figure and each DE's distinct top-10 documents (the hubness target's
    figure); --check compares a count within the tolerance as a share of it, not as an absolute number."""
    from dualist.repro.matrix import record_entry

    results = _results("nfcorpus", [])
    results["rows"] = [{"id": "zeroshot", "model": "DE zero-shot", "re-rank nDCG@10": 0.33, "hybrid nDCG@10": 0.351,
                        "top-10 distinct docs": 1915, "top-10 max occurrence": 13},
                       {"id": "teacher", "model": "CA teacher", "re-rank nDCG@10": 0.31, "hybrid nDCG@10": None,
                        "top-10 distinct docs": None}]
    path = record_entry(results, tmp_path / "m.yaml")
    expected = load_matrix(path)["conditions"]["nfcorpus-full"]["expected"]
    assert expected == {"zeroshot": {"rerank.ndcg@10": 0.33, "hybrid.ndcg@10": 0.351, "retrieval.distinct@10": 1915},
                        "teacher": {"rerank.ndcg@10": 0.31}}
    assert isinstance(expected["zeroshot"]["retrieval.distinct@10"], int)
    table = print_table(path)
    assert "top-10 distinct docs" in table and "1915" in table and "hybrid nDCG@10" in table
    # 2% of 1915 is 38 documents: 1880 is within it, 1870 is not; a score moves by at most 0.02
    for got, ok in ((1880, True), (1870, False), (1950, True), (1960, False)):
        rows = [{**results["rows"][0], "top-10 distinct docs": got}]
        verdict = {f: o for _, f, _, _, o in compare_rows(rows, {"zeroshot": expected["zeroshot"]}, 0.02)}
        assert verdict == {"rerank.ndcg@10": True, "hybrid.ndcg@10": True, "retrieval.distinct@10": ok}, got


def test_a_matrix_keyed_by_labels_is_refused(tmp_path):
    from dualist.errors import ConfigError

    bad = tmp_path / "m.yaml"
    bad.write_text(yaml.safe_dump({"conditions": {"x-quick": {"dataset": "x", "profile": "quick", "command": "c",
                                                              "expected": {"DE + M3SE": {"rerank.ndcg@10": 0.5}}}}}))
    with pytest.raises(ConfigError, match="unknown model id 'DE \\+ M3SE'"):
        load_matrix(bad)


def test_check_reruns_and_reports(repro_matrix, capsys):
    path, out = repro_matrix
    assert main(["repro", "--check", "--matrix", str(path), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "OK   tiny" in text and "0 FAIL" in text


def test_check_fails_when_a_figure_moves(repro_matrix, tmp_path):
    path, out = repro_matrix
    data = yaml.safe_load(path.read_text())
    next(iter(data["conditions"].values()))["expected"]["bm25"]["rerank.ndcg@10"] += 0.5
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data))
    with pytest.raises(SystemExit) as exc:
        main(["repro", "--check", "--matrix", str(bad), "--out", str(out)])
    assert exc.value.code == 1


@pytest.fixture(scope="module")
def repro_matrix(tiny_beir, tiny_bert, tmp_path_factory):
    """A one-entry matrix whose figures come from a first run on the tiny fixture."""
    out = tmp_path_factory.mktemp("matrix")
    args = ["repro", "--dataset", str(tiny_beir), "--model", str(tiny_bert), "--override", TINY,
            "--losses", "onehot,m3se", "--out", str(out / f"{tiny_beir.name}-quick")]
    assert main(args) == 0
    rows = json.loads((out / f"{tiny_beir.name}-quick" / "results.json").read_text())["rows"]
    expected = {r["id"]: {"rerank.ndcg@10": round(r["re-rank nDCG@10"], 4)} for r in rows}
    path = out / "matrix.yaml"
    path.write_text(yaml.safe_dump({"tolerance": 0.001, "conditions": {f"{tiny_beir.name}-quick": {
        "dataset": str(tiny_beir), "profile": "quick", "model": str(tiny_bert), "override": TINY.split(","),
        "losses": ["onehot", "m3se"], "command": "(the fixture's)", "expected": expected}}}))
    return path, out


def test_readme_table_is_generated_from_the_matrix():
    """The README's results block must be exactly `dualist repro --table` (regenerate, don't hand-edit)."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    start, end = "<!-- results-table:start -->\n", "\n<!-- results-table:end -->"
    block = readme[readme.index(start) + len(start):readme.index(end)]
    assert block == print_table(MATRIX_PATH)
