"""ablations/README.md's full-scale widths are generated from the code (bench.ablations_readme)."""

from __future__ import annotations

from bench.ablations_readme import README, WIDTHS_BEGIN, WIDTHS_END, generate_widths, render


def test_widths_section_is_generated_and_up_to_date():
    text = README.read_text()
    assert render(text) == text, "run `python -m bench.ablations_readme`"
    section = text[text.index(WIDTHS_BEGIN):text.index(WIDTHS_END)]
    assert section + WIDTHS_END == generate_widths()


def test_the_four_golden_ratio_steps_show_2560():
    section = generate_widths()
    ratio = section[section.index("`ratio_ablation.yaml`"):]
    ratio = ratio[:ratio.index("\n\n`") if "\n\n`" in ratio else len(ratio)]
    rows = {line.split("|")[1].strip(): line for line in ratio.splitlines() if line.startswith("| ")}
    for step in ("9", "11", "14", "15"):
        assert "D_ff 2560 " in rows[step], rows[step]
    assert "D_ff 2559" not in section
