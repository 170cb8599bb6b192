"""`jaxsynth reader-study create|serve|results`: a blinded real-vs-synthetic study for experts.

`create` samples `--n` images per rater (half real, half synthetic), copies them re-encoded
under random names into a new study folder and prints one private link per rater; `serve` runs
the rating web app on 127.0.0.1 by default; `results` writes results.json / results.md /
results.png (paper 003 figure 5) and prints the markdown. See docs/reader_study.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from jaxsynth.errors import UserError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "reader-study", help="blinded real-vs-synthetic reader study (create, serve, results)"
    )
    sub = parser.add_subparsers(dest="reader_study_command", metavar="ACTION")
    sub.required = True

    c = sub.add_parser("create", help="sample images into a new blinded study folder")
    c.add_argument("--real", required=True, help="folder of real images (searched recursively)")
    c.add_argument("--synthetic", required=True, help="folder of synthetic images")
    c.add_argument(
        "--n", type=int, default=100, help="images per rater: n//2 real, the rest synthetic"
    )
    c.add_argument("--raters", type=int, default=4, help="number of raters (one private link each)")
    c.add_argument("--out", required=True, help="new study folder (must not exist or be empty)")
    c.add_argument("--seed", type=int, default=0, help="seed of the sample and of every order")
    c.add_argument("--resize", type=int, help="resize every image to N x N (when sizes differ)")
    c.add_argument(
        "--base-url", default="http://127.0.0.1:8000", help="prefix of the printed rater links"
    )
    c.set_defaults(func=run_create, takes_config=False)

    s = sub.add_parser("serve", help="run the rating web app")
    s.add_argument("study", help="study folder made by `reader-study create`")
    s.add_argument("--host", default="127.0.0.1", help="interface to bind (default: loopback only)")
    s.add_argument("--port", type=int, default=8000)
    s.set_defaults(func=run_serve, takes_config=False)

    r = sub.add_parser("results", help="score the study: JSON, markdown and a bar chart")
    r.add_argument("study", help="study folder")
    r.add_argument("--ssim-json", help='JSON {"<file under --synthetic>": ssim} (else computed)')
    r.add_argument("--no-ssim", action="store_true", help="skip the Likert-vs-SSIM correlation")
    r.add_argument("--out", help="output folder (default STUDY/results)")
    r.set_defaults(func=run_results, takes_config=False)


def run_create(args: argparse.Namespace) -> int:
    from jaxsynth.reader_study.create import create_study

    study = create_study(
        args.real,
        args.synthetic,
        args.out,
        n=args.n,
        num_raters=args.raters,
        seed=args.seed,
        resize=args.resize,
    )
    skipped = study.skipped
    h, w = study.image_size
    print(
        f"created {study.study_dir}: {study.num_real} real + {study.num_synthetic} synthetic "
        f"images ({w}x{h}) for {len(study.rater_tokens)} rater(s); "
        f"skipped {skipped['skipped']} corrupt input files"
    )
    for item in skipped["skipped_items"]:
        print(f"  skipped {item['item']}: {item['reason']}", file=sys.stderr)
    print("private rater links (send each rater only their own; valid while `serve` runs there):")
    for name, link in study.links(args.base_url):
        print(f"  {name}: {link}")
    return 0


def run_serve(args: argparse.Namespace) -> int:
    from jaxsynth.errors import require_extra

    require_extra("reader-study", "reader-study serve")
    from jaxsynth.reader_study.app import serve

    if not 0 <= args.port <= 65535:
        raise UserError(f"--port {args.port}: not a TCP port")
    try:
        serve(args.study, host=args.host, port=args.port)
    except OSError as e:
        raise UserError(f"cannot listen on {args.host}:{args.port} ({e.strerror or e})") from e
    return 0


def run_results(args: argparse.Namespace) -> int:
    from jaxsynth.reader_study.results import compute_results, to_markdown, write_results

    if args.ssim_json and args.no_ssim:
        raise UserError("--ssim-json and --no-ssim contradict each other")
    res = compute_results(args.study, ssim_json=args.ssim_json, ssim=not args.no_ssim)
    paths = write_results(res, args.out or Path(args.study) / "results")
    print(to_markdown(res))
    print(json.dumps({k: str(v) for k, v in paths.items()}))
    return 0
