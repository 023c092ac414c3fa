"""`dspyrl report RUN_DIR`: (re)write the HTML report of a run or comparison folder."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("report", help="(re)write the HTML report of a run or comparison folder",
                       description="Rebuild RUN_DIR/report.html (self-contained, plots embedded) from the folder's "
                                   "comparison.json or metrics.jsonl.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a folder written by compare, optimize, finetune or eval")
    p.set_defaults(handler=run_command)


def run_command(args) -> int:
    from dspyrl.compare.report import write_report

    print(write_report(args.run_dir))
    return 0
