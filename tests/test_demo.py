from evalkit.demo import SUITES, run_demo


def test_demo_writes_new_run_each_time(tmp_path):
    first = run_demo(tmp_path, per_category=4, calibration=False, progress=False)
    second = run_demo(tmp_path, per_category=4, calibration=False, progress=False)
    assert first != second and first.parent == second.parent == tmp_path
    report = (first / "report.md").read_text()
    for name in SUITES:
        assert (first / f"{name}.png").stat().st_size > 1000
        assert f"### {name} — version" in report
    assert report.count("| color-val-") == 4 and "unseen" in report
