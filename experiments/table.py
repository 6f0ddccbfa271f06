"""Build one of the paper's tables from the results store (no model is run) and print it.

    python experiments/table.py table2                                  # embedded default, embedded suite
    python experiments/table.py table2 --model llama3-8b --suite paper_table2
    python experiments/table.py table2 --where eval.limit=50 --where speed.prompt_len=512   # pick one setting
Writes figures/<table>.md, .csv and .tex (figures/<table>_<model>_<suite>.* for other models/suites). The
records of a table must share one setting; when they do not, the error lists the fields that differ.
"""

import argparse
from pathlib import Path

from whatmatters.results import ResultsStore
from whatmatters.tables import TableError, build_table, write_table

ROOT = Path(__file__).parents[1]


def where_pair(text: str) -> tuple[str, str]:
    """`FIELD=VALUE` from the command line; the value compares as text with the record's setting."""
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"--where takes FIELD=VALUE (e.g. eval.limit=50), got {text!r}")
    return name, value


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("table", help="experiment name: table1, table2, table3, table6, table7, figures")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--suite", default="embedded")
    parser.add_argument("--where", type=where_pair, action="append", default=[], metavar="FIELD=VALUE")
    parser.add_argument("--results", type=Path, default=ROOT / "results")
    parser.add_argument("--out", type=Path, default=ROOT / "figures")
    args = parser.parse_args()
    records = ResultsStore(args.results).records()
    try:
        frame = build_table(records, args.table, args.model, args.suite, dict(args.where))
    except TableError as err:
        raise SystemExit(f"{args.table}: {err}") from None
    if frame.empty:
        raise SystemExit(f"No records for {args.table} / {args.model} / {args.suite} in {args.results}")
    title = f"{args.table}: {args.model}, {args.suite} suite"
    default = (args.model, args.suite) == ("smollm2-135m", "embedded")
    stem = args.table if default else f"{args.table}_{args.model}_{args.suite}"
    md, *_ = write_table(frame, args.out / stem, title)
    print(md.read_text())


if __name__ == "__main__":
    main()
