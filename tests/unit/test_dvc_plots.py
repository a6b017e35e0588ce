"""The offline template for dvc plots show (apot.reporting.dvc_plots, apot dvc-plots-template)."""
import re


def test_dvc_plots_template_inlines_the_libraries_and_keeps_dvcs_placeholders(tmp_path):
    from apot.reporting.dvc_plots import write_offline_template
    result = write_offline_template(tmp_path / "t.html")
    text = (tmp_path / "t.html").read_text()
    assert result["bytes"] == len(text.encode()) > 1_000_000
    assert "{plot_divs}" in text and "{refresh_tag}" in text
    assert "{scripts}" not in text  # DVC would put its CDN script tags there
    assert text.count("<script>") == 3
    assert not re.search(r"<script[^>]*\ssrc=", text)  # nothing loaded from elsewhere
