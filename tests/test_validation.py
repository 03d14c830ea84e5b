"""Every reader checks its rows: a NaN, an inf, a non-number, a short row, an image listed twice, a
label out of range or a missing content id ends the load in ONE DataError whose first line names the
file, the line (row, entry) and the problem; `python -m data_pipelines.check` lists them all."""

from pathlib import Path

import numpy as np
import pytest

import data_pipelines
from data_pipelines import check
from data_pipelines.records import DataError
from tests import data_fixtures


def _lines(path: Path, edit) -> None:
    lines = path.read_text().splitlines()
    edit(lines)
    path.write_text("\n".join(lines) + "\n")


def _line(path: Path, line: int, change) -> None:
    """Replaces line `line` (1-based) by change(old line)."""

    def edit(lines):
        lines[line - 1] = change(lines[line - 1])

    _lines(path, edit)


def _field(path: Path, line: int, column: int, value: str) -> None:
    def edit(lines):
        fields = lines[line - 1].split(",")
        fields[column] = value
        lines[line - 1] = ",".join(fields)

    _lines(path, edit)


def _cell(path: Path, row: int, column: int, value) -> None:
    import openpyxl

    book = openpyxl.load_workbook(path)
    book.active.cell(row, column).value = value
    book.save(path)


def _append_row_copy(path: Path, row: int) -> None:
    import openpyxl

    book = openpyxl.load_workbook(path)
    sheet = book.active
    sheet.append([c.value for c in sheet[row]])
    book.save(path)


# ---------------------------------------------------------------- one family per file format
# Each: (set, fixture builder, the file it reads, {fault: (apply(file), the problem as reported)});
# every fault of a family is in its own row, so that check can be shown all of them at once.

LABEL_FAULTS = ("nan", "inf", "abc", "range")


def _score_faults(put, unit: str, first: int, out_of_range: str, range_words: str):
    """nan, inf, abc and out-of-range labels in rows first..first+3; put(file, row, text) writes one."""
    texts = {"nan": "nan", "inf": "inf", "abc": "abc", "range": out_of_range}
    problems = {
        "nan": "is not finite",
        "inf": "is not finite",
        "abc": "is not a number",
        "range": f"is outside {range_words}",
    }
    return {
        fault: (
            lambda f, n=first + i, text=texts[fault]: put(f, n, text),
            f"{unit} {first + i}: score '{texts[fault]}' {problems[fault]}",
        )
        for i, fault in enumerate(LABEL_FAULTS)
    }


KADID = (
    "kadid10k",
    data_fixtures.kadid,
    "dmos.csv",
    {
        **_score_faults(
            lambda f, n, v: _field(f, n, 2, v), "line", 3, "7.5", "1..5, the range of KADID-10k's labels"
        ),
        "short": (
            lambda f: _line(f, 7, lambda old: old.rsplit(",", 2)[0]),
            "line 7: 2 fields, the header has 4",
        ),
        "content": (lambda f: _field(f, 8, 1, ""), "line 8: no reference image (the content id)"),
        "duplicate": (
            lambda f: _lines(f, lambda ls: ls.append(ls[1])),
            "line 22: 'I01_01_01.png' again (first on line 2)",
        ),
    },
)
KONIQ = (
    "koniq10k",
    data_fixtures.koniq,
    "koniq10k_scores_and_distributions.csv",
    {
        **_score_faults(
            lambda f, n, v: _field(f, n, 7, v), "line", 3, "5.5", "1..5, the range of KonIQ-10k's labels"
        ),
        "short": (
            lambda f: _line(f, 7, lambda old: old.rsplit(",", 3)[0]),
            "line 7: 7 fields, the header has 10",
        ),
        "duplicate": (
            lambda f: _lines(f, lambda ls: ls.append(ls[1])),
            "line 22: '1000.jpg' again (first on line 2)",
        ),
    },
)
KONIQ_SPLIT = (
    "koniq10k",
    data_fixtures.koniq,
    "koniq10k_distributions_sets.csv",
    {
        "set": (
            lambda f: _field(f, 3, 9, "train"),
            "line 3: set 'train' is not one of ['training', 'validation', 'test']",
        ),
        "short": (
            lambda f: _line(f, 4, lambda old: old.rsplit(",", 1)[0]),
            "line 4: 9 fields, the header has 10",
        ),
        "unscored": (
            lambda f: _field(f, 5, 0, "999.jpg"),
            "line 5: 999.jpg is not in koniq10k_scores_and_distributions.csv",
        ),
        "duplicate": (
            lambda f: _lines(f, lambda ls: ls.append(ls[1])),
            "line 22: '1000.jpg' again (first on line 2)",
        ),
    },
)
TID = (
    "tid2013",
    data_fixtures.tid2013,
    "mos_with_names.txt",
    {
        **_score_faults(
            lambda f, n, v: _line(f, n, lambda old: f"{v} {old.split()[1]}"),
            "line",
            1,
            "9.5",
            "0..9, the range of TID2013's labels",
        ),
        "short": (
            lambda f: _line(f, 5, lambda old: old.split()[0]),
            "line 5: expected 'MOS NAME', got '6.00000'",
        ),
        "content": (
            lambda f: _line(f, 6, lambda old: "4.5 x01.bmp"),
            "line 6: image name 'x01.bmp' is not iRR_TT_L.bmp (the reference id comes from it)",
        ),
        "duplicate": (
            lambda f: _lines(f, lambda ls: ls.append(ls[0])),
            "line 7: 'i01_01_1.bmp' again (first on line 1)",
        ),
    },
)
CSIQ = (
    "csiq",
    data_fixtures.csiq,
    "csiq.DMOS.xlsx",
    {
        **_score_faults(
            lambda f, n, v: _cell(f, n, 6, v), "row", 5, "1.5", "0..1, the range of CSIQ's labels"
        ),
        "short": (lambda f: _cell(f, 9, 6, None), "row 9: no score"),
        "content": (lambda f: _cell(f, 10, 1, None), "row 10: no image name (the content id)"),
        "duplicate": (lambda f: _append_row_copy(f, 4), "row 16: '1600.awgn.1.png' again (first on row 4)"),
    },
)
SPAQ = (
    "spaq",
    data_fixtures.spaq,
    "Annotations/MOS and Image attribute scores.xlsx",
    {
        # three rows, so one fault at a time (CSIQ shows check listing xlsx faults together)
        "nan": (lambda f: _cell(f, 2, 2, "nan"), "row 2: score 'nan' is not finite"),
        "inf": (lambda f: _cell(f, 2, 2, "inf"), "row 2: score 'inf' is not finite"),
        "abc": (lambda f: _cell(f, 2, 2, "abc"), "row 2: score 'abc' is not a number"),
        "range": (
            lambda f: _cell(f, 2, 2, 100.5),
            "row 2: score 100.5 is outside 0..100, the range of SPAQ's labels",
        ),
        "short": (lambda f: _cell(f, 3, 2, None), "row 3: no score"),
        "content": (lambda f: _cell(f, 4, 1, None), "row 4: no image name"),
        "duplicate": (lambda f: _append_row_copy(f, 2), "row 5: '00000.jpg' again (first on row 2)"),
    },
)


def _mat_faults(rewrite, root_of, entry: int, out_of_range: float, range_words: str):
    """The label faults of .mat entry `entry`; rewrite(root, labels={index: value}) writes them."""

    def put(value):
        return lambda f: rewrite(root_of(f), labels={entry - 1: value})

    return {
        "nan": (put(np.nan), f"entry {entry}: score nan is not finite"),
        "inf": (put(np.inf), f"entry {entry}: score inf is not finite"),
        "range": (put(out_of_range), f"entry {entry}: score {out_of_range:g} is outside {range_words}"),
    }


def _live_rewrite(root: Path, labels=(), names=(), orgs=()) -> None:
    """LIVE's .mat files with entries replaced ({index: value} each)."""
    _, _, dmos, flags, refs = (list(c) for c in zip(*data_fixtures._live_entries()))
    for array, changes in ((dmos, labels), (refs, names), (flags, orgs)):
        for k, v in dict(changes).items():
            array[k] = v
    data_fixtures.live_mats(root, dmos, flags, refs)


def _clive_rewrite(root: Path, labels=(), names=()) -> None:
    mos, files = list(data_fixtures.CLIVE_MOS), list(data_fixtures.CLIVE_NAMES)
    for array, changes in ((mos, labels), (files, names)):
        for k, v in dict(changes).items():
            array[k] = v
    data_fixtures.clive_mats(root, files, mos)


LIVE = (
    "live",
    data_fixtures.live,
    "dmos.mat",
    {
        **_mat_faults(
            _live_rewrite,
            lambda f: f.parent,
            2,
            125.0,
            "0..100 with a margin of 12, the range of LIVE's labels",
        ),
        "content": (
            lambda f: _live_rewrite(f.parent, names={2: ""}),
            "entry 3: no reference name in refnames_all.mat (the content id)",
        ),
        "orgs": (lambda f: _live_rewrite(f.parent, orgs={0: 2.0}), "entry 1: orgs 2 is neither 0 nor 1"),
    },
)
CLIVE = (
    "clive",
    data_fixtures.clive,
    "Data/AllMOS_release.mat",
    {
        **_mat_faults(_clive_rewrite, lambda f: f.parents[1], 9, -3.0, "0..100, the range of CLIVE's labels"),
        "duplicate": (
            lambda f: _clive_rewrite(f.parents[1], names={9: "1.JPG"}),
            "entry 10: '1.JPG' again (first on entry 9)",
        ),
        "content": (
            lambda f: _clive_rewrite(f.parents[1], names={10: ""}),
            "entry 11: no image name in AllImages_release.mat",
        ),
    },
)

FAMILIES = [KADID, KONIQ, KONIQ_SPLIT, TID, CSIQ, SPAQ, LIVE, CLIVE]
CASES = [(family, fault) for family in FAMILIES for fault in family[3]]


def _read(name, root, file):
    if file == "koniq10k_distributions_sets.csv":
        return data_pipelines.official_split(root)
    return data_pipelines.load(name, root)


@pytest.mark.parametrize("family, fault", CASES, ids=[f"{f[0]}:{f[2].split('/')[-1]}:{k}" for f, k in CASES])
def test_a_bad_row_is_one_error_naming_file_line_and_problem(tmp_path, family, fault):
    name, build, file, faults = family
    root = build(tmp_path)
    apply, expected = faults[fault]
    apply(root / file)
    with pytest.raises(DataError) as err:
        _read(name, root, file)
    message = str(err.value)
    unit = "entry" if file.endswith(".mat") else "row"
    assert message.startswith(f"{root / file}: 1 bad {unit}; {expected}")
    assert message.endswith(
        f"run `python -m data_pipelines.check --dataset {name} --root {root}` to list them all"
    )
    assert "\n" not in message


COMBINED = [KADID, KONIQ, KONIQ_SPLIT, TID, CSIQ]


@pytest.mark.parametrize("family", COMBINED, ids=[f"{f[0]}:{f[2]}" for f in COMBINED])
def test_check_lists_every_bad_row_and_exits_1(tmp_path, capsys, family):
    name, build, file, faults = family
    root = build(tmp_path)
    for apply, _ in faults.values():
        apply(root / file)
    assert check.main(["--dataset", name, "--root", str(root)]) == 1
    out = capsys.readouterr().out
    for _, problem in faults.values():
        assert f"PROBLEM: {root / file} {problem}" in out
    assert f"{len(faults)} problems" in out


def test_check_lists_every_bad_clive_entry(tmp_path, capsys):
    root = data_fixtures.clive(tmp_path)
    _clive_rewrite(root, labels={8: np.nan, 9: np.inf, 10: -3.0}, names={11: "1.JPG", 12: ""})
    assert check.main(["--dataset", "clive", "--root", str(root)]) == 1
    out = capsys.readouterr().out
    for problem in (
        "entry 9: score nan is not finite",
        "entry 10: score inf is not finite",
        "entry 11: score -3 is outside 0..100",
        "entry 12: '1.JPG' again (first on entry 9)",
        "entry 13: no image name",
    ):
        assert f"PROBLEM: {root / 'Data' / 'AllMOS_release.mat'} {problem}" in out
    assert "5 problems" in out


def test_live_entries_are_listed_by_check(tmp_path, capsys):
    root = data_fixtures.live(tmp_path)
    _live_rewrite(root, labels={1: np.nan, 2: np.inf, 3: 125.0}, names={4: ""})
    assert check.main(["--dataset", "live", "--root", str(root)]) == 1
    out = capsys.readouterr().out
    for problem in (
        "entry 2: score nan is not finite",
        "entry 3: score inf is not finite",
        "entry 4: score 125 is outside 0..100 with a margin of 12",
        "entry 5: no reference name",
    ):
        assert f"PROBLEM: {root / 'dmos.mat'} {problem}" in out
    assert "4 problems" in out


def test_several_bad_rows_are_counted_and_the_first_shown(tmp_path):
    root = data_fixtures.kadid(tmp_path)
    for line in (3, 5, 7, 9):
        _field(root / "dmos.csv", line, 2, "abc")
    with pytest.raises(DataError) as err:
        data_pipelines.load("kadid10k", root)
    assert str(err.value).startswith(
        f"{root / 'dmos.csv'}: 4 bad rows; line 3: score 'abc' is not a number; line 5: score 'abc' is not a "
        "number; line 7: score 'abc' is not a number; and 1 more; run `python -m data_pipelines.check"
    )


def test_arrays_of_different_lengths_name_the_counts(tmp_path):
    root = data_fixtures.clive(tmp_path)
    data_fixtures.clive_mats(root, data_fixtures.CLIVE_NAMES, data_fixtures.CLIVE_MOS[:-1])
    with pytest.raises(
        DataError, match=r"AllMOS_release.mat: 16 scores for the 17 images of .*AllImages_release"
    ):
        data_pipelines.load("clive", root)
    root = data_fixtures.live(tmp_path / "live")
    _, _, dmos, orgs, refs = (list(c) for c in zip(*data_fixtures._live_entries()))
    data_fixtures.live_mats(root, dmos[:-1], orgs, refs)
    with pytest.raises(
        DataError,
        match=r"dmos.mat: dmos/orgs/refnames_all hold 981/982/982 entries, LIVE "
        r"release 2 has 982",
    ):
        data_pipelines.load("live", root)


def test_a_header_without_a_needed_column_names_it(tmp_path):
    root = data_fixtures.kadid(tmp_path)
    _lines(root / "dmos.csv", lambda ls: ls.__setitem__(0, "dist_img,ref_img,mos,var"))
    with pytest.raises(
        DataError, match=r"dmos.csv: the header \(dist_img,ref_img,mos,var\) has no column 'dmos'"
    ):
        data_pipelines.load("kadid10k", root)


def test_live_accepts_the_realigned_dmos_range(tmp_path):
    """LIVE's realigned DMOS runs from -2.64 to 111.77: inside the stated margin."""
    root = data_fixtures.live(tmp_path)
    _live_rewrite(root, labels={1: -2.64, 2: 111.77})
    records = data_pipelines.load("live", root)
    assert [r.mos for r in records[:2]] == [-2.64, 111.77]
    assert records[1].score == pytest.approx(1 - 111.77 / 100)


def test_missing_images_are_one_line_and_a_file_not_found_error(tmp_path):
    root = data_fixtures.kadid(tmp_path)
    for name in ("I02_01_01.png", "I03_02_02.png"):
        (root / "images" / name).unlink()
    with pytest.raises(FileNotFoundError) as err:
        data_pipelines.load("kadid10k", root)
    assert isinstance(err.value, DataError) and "\n" not in str(err.value)
    assert str(err.value).startswith(
        f"2 of the 25 images listed in {root / 'dmos.csv'} are missing under {root}: "
    )


@pytest.mark.parametrize(
    "name, build, file, data, problem",
    [
        ("live", data_fixtures.live, "dmos.mat", b"garbage" * 10, "not readable as a MATLAB .mat file"),
        ("csiq", data_fixtures.csiq, "csiq.DMOS.xlsx", b"garbage", "not readable as an .xlsx workbook"),
        (
            "kadid10k",
            data_fixtures.kadid,
            "dmos.csv",
            b"dist_img,ref_img,dmos\n\xff,1,2\n",
            "not readable as CSV text",
        ),
        ("tid2013", data_fixtures.tid2013, "mos_with_names.txt", b"\xff\xfe", "not readable as UTF-8 text"),
    ],
)
def test_a_damaged_file_is_one_error_naming_it(tmp_path, name, build, file, data, problem):
    root = build(tmp_path)
    (root / file).write_bytes(data)
    with pytest.raises(DataError) as err:
        data_pipelines.load(name, root)
    assert str(err.value).startswith(f"{root / file}: {problem} (") and "\n" not in str(err.value)


def test_a_mat_file_without_the_variable_names_what_it_holds(tmp_path):
    from scipy.io import savemat

    root = data_fixtures.live(tmp_path)
    savemat(root / "dmos.mat", {"dmos_new": np.zeros((1, 982))})
    with pytest.raises(DataError, match=r"dmos.mat: no variable dmos, orgs \(it holds dmos_new\)"):
        data_pipelines.load("live", root)
