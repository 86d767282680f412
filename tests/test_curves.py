"""The metric-versus-time curve: read from metrics.csv, points drawn where their values are."""

import pytest

from raccn.viz.curves import COLOURS, main, plot_curve, plot_lines, read_series


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


def test_log_log_lines_put_each_series_at_its_points():
    """Two series on log-log axes: a point of each, in its own colour, where log10 puts it;
    a non-positive value is refused."""
    img = plot_lines({"a": ([10, 1000], [1, 100]), "b": ([10, 1000], [100, 1])}, "x", "y", log=True,
                     size=(300, 200))
    # plot box: left 60, right 15, top 40, bottom 45; log10(y) in [0, 2] padded by 8 % of 2
    def at(x, y):
        px = 60 + (x - 1) / 2 * (300 - 60 - 15)
        py = 200 - 45 - (y + 0.16) / 2.32 * (200 - 40 - 45)
        return round(px), round(py)
    assert img.getpixel(at(1, 0)) == COLOURS[0] and img.getpixel(at(3, 2)) == COLOURS[0]
    assert img.getpixel(at(1, 2)) == COLOURS[1] and img.getpixel(at(3, 0)) == COLOURS[1]
    with pytest.raises(ValueError, match="> 0"):
        plot_lines({"a": ([1, 2], [0, 1])}, "x", "y", log=True)
