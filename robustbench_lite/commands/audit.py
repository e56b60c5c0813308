"""``robust-eval audit-labels``: the training images whose labels are probably wrong."""

from __future__ import annotations

import argparse
import csv
import io
from collections.abc import Sequence
from pathlib import Path

from robustbench_lite.commands import args as a

DESCRIPTION = ("Find the training images whose labels are probably wrong: out-of-fold predicted probabilities "
               "(a logistic regression on the model's penultimate features, fitted K times on the other folds) and "
               "confident learning (Northcutt et al. 2021). A robust-eval checkpoint is audited on the images it "
               "trained on, stressed as it records; when it records injected label noise, the detector's precision "
               "and recall against it are reported. The suspects (index, given label, suggested label, score) are "
               "always written.")


def parser() -> argparse.ArgumentParser:
    from robustbench_lite.analysis.labels import FILTERS, FOLDS
    from robustbench_lite.auditing import METHODS

    p = a.Parser(prog=f"{a.PROG} audit-labels", description=DESCRIPTION,
                 epilog="examples:\n"
                        "  robust-eval audit-labels --checkpoint noisy.pt --html audit.html\n"
                        "  robust-eval audit-labels --checkpoint model.onnx --data imagefolder:train/ --method model\n"
                        "exit codes: 0 audited, 2 a user error",
                 formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=None, metavar="PATH",
                   help="the model: a robust-eval checkpoint (its own training set is audited) or, with --data, any "
                        "model file (default: the --model's quick baseline)")
    p.add_argument("--model", default=None, help="architecture: of a state_dict file, or whose quick baseline is used")
    p.add_argument("--data", default=None, metavar="SPEC",
                   help="labelled images to audit instead of the checkpoint's training set: a dataset name or "
                        "imagefolder:PATH")
    p.add_argument("--method", choices=METHODS, default="probe",
                   help="probe: out-of-fold logistic regression on the penultimate features; model: the model's own "
                        "softmax, in-sample (default: probe)")
    p.add_argument("--folds", type=a.positive_int, default=FOLDS, metavar="K",
                   help=f"folds of the out-of-fold probe (default: {FOLDS})")
    p.add_argument("--filter", choices=FILTERS, default=FILTERS[0],
                   help="prune_by_noise_rate: as many images per (given, true) pair as the calibrated confident joint "
                        "estimates, largest margin first; confident_learning: every image off the joint's diagonal "
                        f"(default: {FILTERS[0]})")
    p.add_argument("--limit", type=a.positive_int, default=None, metavar="N", help="audit the first N images")
    p.add_argument("-o", "--suspects", default=None, metavar="PATH",
                   help="the suspects as CSV: index, given, suggested, score, injected (default: "
                        "reports/<checkpoint>.suspects.csv)")
    p.add_argument("--json", default=None, metavar="PATH", help="write the whole report as JSON here")
    p.add_argument("--html", default=None, metavar="PATH", help="write a page with the worst suspects' images here")
    p.add_argument("--batch-size", type=a.positive_int, default=256, help="batch size (default: 256)")
    a.add_run_arguments(p, config=False, progress=False)
    return p


def suspects_csv(report: dict) -> str:
    """The suspects as CSV text (lowest score first)."""
    buf = io.StringIO()
    fields = ["index", "given", "given_name", "suggested", "suggested_name", "score"] + (
        ["injected"] if "detection" in report else [])
    writer = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in report["suspects"]:
        writer.writerow(row)
    return buf.getvalue()


def summary(report: dict) -> list[str]:
    """What the audit found, a few lines."""
    lines = [f"audit: {report['images']} images of {report['data']} ({report['method']}"
             + (f", {report['folds']} folds" if report.get("folds") else "") + f", {report['filter']}); "
             f"probe accuracy on the given labels {report['probe_accuracy']:.1%}",
             f"flagged {report['flagged']} images ({report['flagged_fraction']:.1%}); estimated noise rate "
             f"{report['estimated_noise_rate']:.1%}"]
    det = report.get("detection")
    if det:
        def pct(v: float | None) -> str:
            return "-" if v is None else f"{v:.1%}"

        lines.append(f"against the injected noise ({det['injected']} labels, {report['true_noise_rate']:.1%}): "
                     f"precision {pct(det['precision'])}, recall {pct(det['recall'])}, F1 {det['f1']:.3f}; "
                     f"precision of the {det['injected']} lowest-scored {pct(det.get('precision_at_injected'))}")
        naive = report["detection_predicted_neq_given"]
        lines.append(f"  (prediction != given label: precision {pct(naive['precision'])}, recall "
                     f"{pct(naive['recall'])})")
    for row in report["suspects"][:5]:
        lines.append(f"  #{row['index']}: labelled {row['given_name']}, probably {row['suggested_name']} "
                     f"(p(given) {row['score']:.3f})" + ("" if "injected" not in row else
                                                         "  [injected]" if row["injected"] else "  [not injected]"))
    return lines


def run(argv: Sequence[str]) -> int:
    from robustbench_lite.auditing import SHOWN, audit_labels
    from robustbench_lite.errors import RobustEvalError
    from robustbench_lite.files import atomic_write
    from robustbench_lite.outputs import attempt, write_json

    args = a.parse(parser(), argv)
    if args.checkpoint is not None and not Path(args.checkpoint).is_file():
        raise RobustEvalError(f"--checkpoint {args.checkpoint} does not exist")
    name = Path(args.checkpoint).stem if args.checkpoint else (args.model or "shufflenetv2")
    suspects = args.suspects or str(Path("reports") / f"{name}.suspects.csv")
    outputs = {"--suspects": suspects, "--json": args.json, "--html": args.html}
    a.check_outputs({k: v for k, v in outputs.items() if v}, {"--checkpoint": args.checkpoint})
    options = {k: v for k, v in {"device": args.device, "model": args.model}.items() if v is not None}
    report = audit_labels(args.checkpoint, args.data, method=args.method, filter_by=args.filter, folds=args.folds,
                          limit=args.limit, examples=SHOWN if args.html else 0, batch_size=args.batch_size,
                          seed=args.seed, data_dir=args.data_dir, log=a.log, **options)
    for line in summary(report):
        print(line)
    text = suspects_csv(report)
    attempt(f"--suspects {suspects}", lambda: atomic_write(suspects, lambda f: f.write(text)), "suspects")
    if args.html:
        from robustbench_lite.report.audit import write_audit_html

        attempt(f"--html {args.html}", lambda: write_audit_html(args.html, report), "html")
    if args.json:
        plain = {**report, "suspects": [{k: v for k, v in r.items() if k != "png"} for r in report["suspects"]]}
        attempt(f"--json {args.json}", lambda: write_json(args.json, plain), "json")
    return 0
