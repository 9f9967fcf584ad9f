"""The `learnkb` command: serve, worker, migrate, backup, restore, shops, keys, knowledge, jobs."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import enum
import json
import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID

from knowledge.access import CLI_ADMIN, Role
from knowledge.errors import Conflict, LearnkbError
from knowledge.learning.export import KINDS as EXPORT_KINDS
from knowledge.runtime import Runtime, open_runtime
from knowledge.settings import Settings
from knowledge.store import db, entries, keys, shops
from knowledge.store.migrate import migrate

if TYPE_CHECKING:
    from app.factory import StartHook

log = logging.getLogger("learnkb")


def _plain(value: Any) -> Any:
    """Dataclasses (shops, keys, entries...) as JSON-ready dicts."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, enum.Enum):
        return value.value
    return value


def _print(value: Any) -> None:
    print(json.dumps(_plain(value), indent=2, default=str))


async def _with_runtime(settings: Settings, work: Callable[[Runtime], Awaitable[Any]],
                        load_model: bool = False, check_vectors: bool = True) -> Any:
    rt = await open_runtime(settings, load_model=load_model, check_vectors=check_vectors)
    try:
        return await work(rt)
    finally:
        await rt.close()


def cmd_serve(settings: Settings, args: argparse.Namespace) -> None:
    import uvicorn

    from app.factory import create_app

    settings = settings.with_overrides(
        host=args.host or settings.host, port=args.port or settings.port,
        demo=args.demo or settings.demo, run_jobs=settings.run_jobs and not args.no_jobs)
    hooks: list[StartHook] = []
    if settings.demo:
        hooks.append(_demo_hook(settings))
    if settings.run_jobs:
        from jobs.scheduler import scheduler_hook

        hooks.append(scheduler_hook)
    if settings.metrics_enabled and settings.metrics_port:
        from app.observability import metrics_port_hook

        hooks.append(metrics_port_hook)
    app = create_app(settings, on_start=hooks)
    _serve_metrics_port(settings)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=settings.log_level,
                access_log=False)


def _serve_metrics_port(settings: Settings) -> None:
    """Prometheus on a port of its own (LEARNKB_METRICS_PORT), e.g. one not exposed publicly."""
    if settings.metrics_enabled and settings.metrics_port:
        from prometheus_client import start_http_server

        import app.observability  # noqa: F401  (registers the runtime's collector)

        start_http_server(settings.metrics_port, addr=settings.host)


def _demo_hook(settings: Settings) -> StartHook:
    async def hook(rt: Runtime) -> None:
        from knowledge.demo import load_demo

        demo = await load_demo(rt)
        base = f"http://{settings.host}:{settings.port}"
        print(f"\nlearnkb demo shop ready. Its bot key is in {demo.key_file}. Try:\n"
              f"  curl -s {base}/v1/answer -H \"Authorization: Bearer $(cat {demo.key_file})\" "
              "-H 'Content-Type: application/json' "
              "-d '{\"question\": \"how long does delivery take?\"}'\n"
              f"Review pages: {base}/admin, signed in with the owner key in "
              f"{demo.owner_key_file}\n", flush=True)
        return None

    return hook


def cmd_worker(settings: Settings, args: argparse.Namespace) -> None:
    from jobs.scheduler import start_scheduler

    _serve_metrics_port(settings)

    async def main() -> None:
        rt = await open_runtime(settings)
        scheduler = start_scheduler(rt)
        stop_metrics = None
        if settings.metrics_enabled and settings.metrics_port:
            from app.observability import metrics_port_hook

            stop_metrics = await metrics_port_hook(rt)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        log.info("worker running jobs; Ctrl-C stops it")
        await stop.wait()
        scheduler.shutdown(wait=False)
        if stop_metrics is not None:
            await stop_metrics()
        await rt.close()

    asyncio.run(main())


def cmd_migrate(settings: Settings, args: argparse.Namespace) -> None:
    async def main() -> list[str]:
        url, _ = await db.resolve_database_url(settings)
        return await migrate(url)

    applied = asyncio.run(main())
    print("applied: " + ", ".join(applied) if applied else "database is up to date")


def _without_none(value: Any) -> dict[str, Any]:
    return {k: v for k, v in _plain(value).items() if v is not None}


def cmd_backup(settings: Settings, args: argparse.Namespace) -> None:
    from knowledge.store.backup import backup

    _print(_without_none(asyncio.run(backup(settings, Path(args.file)))))


def cmd_restore(settings: Settings, args: argparse.Namespace) -> None:
    from knowledge.store.backup import restore

    _print(_without_none(asyncio.run(restore(settings, Path(args.file), force=args.force))))


def cmd_shops(settings: Settings, args: argparse.Namespace) -> None:
    async def work(rt: Runtime) -> Any:
        if args.shops_cmd == "create":
            return await shops.create_shop(rt.pool, args.slug, args.name or args.slug)
        return await shops.list_shops(rt.pool, limit=10_000)

    _print(asyncio.run(_with_runtime(settings, work)))


def cmd_keys(settings: Settings, args: argparse.Namespace) -> None:
    async def work(rt: Runtime) -> Any:
        if args.keys_cmd == "create":
            shop_id = (await shops.get_shop(rt.pool, args.shop)).id if args.shop else None
            made = await keys.create_key(rt.pool, Role(args.role), shop_id, args.name or "")
            return {"key": made.key, "secret": made.secret,
                    "note": "the secret is shown once; only its hash is stored"}
        if args.keys_cmd == "revoke":
            return await keys.revoke_key(rt.pool, UUID(args.key_id))
        shop_id = (await shops.get_shop(rt.pool, args.shop)).id if args.shop else None
        return await keys.list_keys(rt.pool, shop_id, limit=10_000)

    _print(asyncio.run(_with_runtime(settings, work)))


def cmd_knowledge(settings: Settings, args: argparse.Namespace) -> None:
    needs_model = args.knowledge_cmd in {"add", "update"}

    async def work(rt: Runtime) -> Any:
        shop_id = (await shops.get_shop(rt.pool, args.shop)).id
        if args.knowledge_cmd == "add":
            draft = entries.EntryDraft(answer=args.answer, question=args.question,
                                       variants=args.variant or [], category=args.category)
            return (await entries.add_entries(rt, shop_id, [draft], CLI_ADMIN))[0]
        if args.knowledge_cmd == "list":
            return (await entries.list_entries(rt.pool, shop_id, limit=args.limit))[0]
        entry_id = UUID(args.entry_id)
        if args.knowledge_cmd == "update":
            changes: dict[str, Any] = {}
            if args.question is not None:
                changes["question"] = args.question
            if args.category is not None:
                changes["category"] = args.category
            return await entries.supersede_entry(
                rt, shop_id, entry_id, CLI_ADMIN, answer=args.answer, variants=args.variant,
                reason=args.reason, **changes)
        if args.knowledge_cmd == "delete":
            return await entries.retire_entry(rt, shop_id, entry_id, CLI_ADMIN, args.reason)
        return await entries.history(rt.pool, shop_id, entry_id)

    _print(asyncio.run(_with_runtime(settings, work, load_model=needs_model)))


def cmd_ingest(settings: Settings, args: argparse.Namespace) -> None:
    from knowledge.store.documents import ingest_document

    async def work(rt: Runtime) -> Any:
        shop_id = (await shops.get_shop(rt.pool, args.shop)).id
        results = []
        for path in args.files:
            file = Path(path)
            data = await asyncio.to_thread(file.read_bytes)
            result = await ingest_document(rt, shop_id, file.name, data, None,
                                           CLI_ADMIN)
            results.append({"document": result.document.name, "changed": result.changed,
                            "chunks_added": result.chunks_added,
                            "chunks_retired": result.chunks_retired})
        return results

    _print(asyncio.run(_with_runtime(settings, work, load_model=True)))


def cmd_transcripts_import(settings: Settings, args: argparse.Namespace) -> None:
    from tqdm import tqdm

    from knowledge.intake.transcripts import TranscriptIn, ingest

    folder = Path(args.dir)
    if not folder.is_dir():
        raise SystemExit(f"learnkb transcripts import: {folder} is not a folder")
    files = sorted(p for p in folder.iterdir()
                   if p.is_file() and p.suffix.lower() in {".txt", ".json", ".vtt", ".srt"})

    async def work(rt: Runtime) -> Any:
        shop = await shops.get_shop(rt.pool, args.shop)
        done: dict[str, int] = {"transcripts": 0, "pairs": 0, "unanswered": 0,
                                "already_imported": 0, "failed": 0}
        failures = []
        for path in tqdm(files, desc="transcripts", unit="call", file=sys.stderr):
            try:
                raw = await asyncio.to_thread(path.read_text, encoding="utf-8")
                result = await ingest(rt, shop, TranscriptIn(raw, filename=path.name),
                                      CLI_ADMIN)
            except Conflict:
                done["already_imported"] += 1
                continue
            except (LearnkbError, UnicodeDecodeError) as exc:
                done["failed"] += 1
                failures.append({"file": path.name, "error": str(exc)})
                continue
            done["transcripts"] += 1
            done["pairs"] += len(result.analysis.pairs)
            done["unanswered"] += len(result.analysis.unanswered)
        return {**done, "failures": failures}

    _print(asyncio.run(_with_runtime(settings, work, load_model=True)))


def cmd_demo(settings: Settings, args: argparse.Namespace) -> None:
    from knowledge.demo import load_demo

    async def work(rt: Runtime) -> Any:
        demo = await load_demo(rt)
        return {"shop_id": demo.shop_id, "key_file": str(demo.key_file),
                "owner_key_file": str(demo.owner_key_file)}

    _print(asyncio.run(_with_runtime(settings, work, load_model=True)))


def cmd_jobs(settings: Settings, args: argparse.Namespace) -> None:
    from jobs.scheduler import run_job

    async def work(rt: Runtime) -> Any:
        return await run_job(rt, args.job)

    # Re-embedding is how a model change is resolved, so it must start despite the mismatch.
    reembedding = args.job == "reembed"
    # Applying embeds new entries, embed-turns logged questions; re-embedding must start despite
    # a model mismatch.
    embeds = {"reembed", "apply", "embed-turns"}
    print(asyncio.run(_with_runtime(settings, work, load_model=args.job in embeds,
                                    check_vectors=not reembedding)))


def cmd_eval(settings: Settings, args: argparse.Namespace) -> None:
    from evaluation.cli import run_eval

    run_eval(args)


def cmd_export(settings: Settings, args: argparse.Namespace) -> None:
    from knowledge.learning.export import export

    async def work(rt: Runtime) -> int:
        shop_id = (await shops.get_shop(rt.pool, args.shop)).id
        lines = 0
        out = (await asyncio.to_thread(open, args.out, "wb")) if args.out else sys.stdout.buffer
        try:
            async for line in export(rt, shop_id, args.kind):
                out.write(line)
                lines += 1
        finally:
            if args.out:
                out.close()
        return lines

    count = asyncio.run(_with_runtime(settings, work))
    print(f"{count} records", file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="learnkb", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the HTTP API (and the batch jobs)")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--demo", action="store_true", help="load the demo shop and its key")
    serve.add_argument("--no-jobs", action="store_true", help="leave jobs to `learnkb worker`")
    serve.set_defaults(func=cmd_serve)

    sub.add_parser("worker", help="run the batch jobs only").set_defaults(func=cmd_worker)
    sub.add_parser("migrate", help="apply pending migrations").set_defaults(func=cmd_migrate)
    sub.add_parser("demo", help="load the demo shop").set_defaults(func=cmd_demo)

    bk = sub.add_parser("backup", help="dump the database to FILE (pg_dump, custom format)")
    bk.add_argument("file")
    bk.set_defaults(func=cmd_backup)
    rs = sub.add_parser("restore", help="replace the database's content with FILE's backup, "
                        "then migrate")
    rs.add_argument("file")
    rs.add_argument("--force", action="store_true",
                    help="replace a database that already holds shops")
    rs.set_defaults(func=cmd_restore)

    shops_p = sub.add_parser("shops", help="create and list shops")
    shops_sub = shops_p.add_subparsers(dest="shops_cmd", required=True)
    create = shops_sub.add_parser("create")
    create.add_argument("slug")
    create.add_argument("--name")
    shops_sub.add_parser("list")
    shops_p.set_defaults(func=cmd_shops)

    keys_p = sub.add_parser("keys", help="create, list and revoke API keys")
    keys_sub = keys_p.add_subparsers(dest="keys_cmd", required=True)
    kc = keys_sub.add_parser("create")
    kc.add_argument("--role", required=True, choices=[r.value for r in Role])
    kc.add_argument("--shop", help="shop id or slug (owner and bot keys)")
    kc.add_argument("--name")
    kl = keys_sub.add_parser("list")
    kl.add_argument("--shop")
    kr = keys_sub.add_parser("revoke")
    kr.add_argument("key_id")
    keys_p.set_defaults(func=cmd_keys)

    kn = sub.add_parser("knowledge", help="add, list, update, delete entries; history")
    kn_sub = kn.add_subparsers(dest="knowledge_cmd", required=True)
    add = kn_sub.add_parser("add")
    add.add_argument("--question")
    add.add_argument("--answer", required=True)
    add.add_argument("--variant", action="append")
    add.add_argument("--category")
    lst = kn_sub.add_parser("list")
    lst.add_argument("--limit", type=int, default=50)
    upd = kn_sub.add_parser("update")
    upd.add_argument("entry_id")
    upd.add_argument("--question")
    upd.add_argument("--answer")
    upd.add_argument("--variant", action="append")
    upd.add_argument("--category")
    upd.add_argument("--reason")
    dele = kn_sub.add_parser("delete")
    dele.add_argument("entry_id")
    dele.add_argument("--reason")
    hist = kn_sub.add_parser("history")
    hist.add_argument("entry_id")
    for p in (add, lst, upd, dele, hist):
        p.add_argument("--shop", required=True, help="shop id or slug")
    kn.set_defaults(func=cmd_knowledge)

    ing = sub.add_parser("ingest", help="ingest documents into a shop's knowledge")
    ing.add_argument("files", nargs="+")
    ing.add_argument("--shop", required=True)
    ing.set_defaults(func=cmd_ingest)

    tr = sub.add_parser("transcripts", help="voice call transcripts")
    tr_sub = tr.add_subparsers(dest="transcripts_cmd", required=True)
    tr_import = tr_sub.add_parser("import", help="load a folder of transcripts (.txt, .json, "
                                  ".vtt, .srt) into a shop, with a progress bar")
    tr_import.add_argument("dir")
    tr_import.add_argument("--shop", required=True)
    tr_import.set_defaults(func=cmd_transcripts_import)

    exp = sub.add_parser("export", help="JSON Lines: qa, preferences (DPO) or label-studio")
    exp.add_argument("kind", choices=list(EXPORT_KINDS))
    exp.add_argument("--shop", required=True)
    exp.add_argument("--out", help="a file (default: standard output)")
    exp.set_defaults(func=cmd_export)

    jobs_p = sub.add_parser("jobs", help="run a batch job once")
    jobs_sub = jobs_p.add_subparsers(dest="jobs_cmd", required=True)
    run = jobs_sub.add_parser("run")
    run.add_argument("job")
    jobs_p.set_defaults(func=cmd_jobs)

    from evaluation.cli import add_parser as add_eval_parser

    add_eval_parser(sub).set_defaults(func=cmd_eval)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env()
        logging.basicConfig(level=settings.log_level.upper(),
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        args.func(settings, args)
    except LearnkbError as exc:
        print(f"learnkb: {exc.detail}", file=sys.stderr)
        raise SystemExit(2) from exc


if __name__ == "__main__":
    main()
