"""The metric-versus-time curve: read from metrics.csv, points drawn where their values are."""

import pytest

from raccn.viz.curves import main, plot_curve, read_series


def test_read_series_skips_rows_without_both_values(tmp_path):
    f = tmp_path / "metrics.csv"
    f.write_text("epoch,step,time/elapsed_s,val/error,train/loss\n0,9,,,1.0\n0,9,60,10.0,\n1,19,120,5.0,\n")
    assert read_series(str(f), "time/elapsed_s", "val/error") == ([60.0, 120.0], [10.0, 5.0])
    with pytest.raises(ValueError, match="no row with both"):
        read_series(str(f), "time/elapsed_s", "val/acc")


def test_points_are_drawn_at_their_coordinates(tmp_path):
    img = plot_curve([0.0, 10.0], [0.0, 1.0], "x", "y", size=(200, 150))
    # plot box: left 70, right 20, top 30, bottom 50; y padded by 5 % of its range
    first = (70, 150 - 50 - round(0.05 / 1.1 * 70))
    last = (180, 30 + round(0.05 / 1.1 * 70))
    for x, y in (first, last):
        assert img.getpixel((x, y)) == (30, 90, 200)
    f = tmp_path / "metrics.csv"
    f.write_text("epoch,time/elapsed_s,val/error\n0,60,10\n1,120,5\n")
    main([str(f), str(tmp_path / "c.png")])
    assert (tmp_path / "c.png").stat().st_size > 1000
