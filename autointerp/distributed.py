"""Scale-out with Ray: the chunks of `autointerp run` go to workers, each with its own LLM clients.

Usage: `autointerp run CONFIG.yaml --ray local --workers 2` (starts a Ray on this machine) or
`--ray HOST:6379` / `--ray ray://HOST:10001` / `--ray auto` (an existing cluster).

Each worker is a Ray actor holding a `pipeline.Worker`: it reads the cache and samples from the run
folder (a path every node must see: a shared file system) and returns each finished chunk to the
driver. Only the driver writes results, one chunk at a time, so a run killed anywhere resumes as
a local one does: nothing finished is lost and nothing is written twice. Each worker keeps its own
response cache (RUN/explanations/llm_cache.w<i>.sqlite), since SQLite files must not be shared
across machines.

Sampling goes the same way (`sample_ray`): chunks of latents go to actors that open the cache
themselves and return JSON lines, which the driver alone appends to the sample file, in the order of
the latents, so the file is the one a local run writes.
"""

from __future__ import annotations

import asyncio
import logging
import math
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

from autointerp.errors import RunError

log = logging.getLogger(__name__)


# The actors get the classes they host from the caller (`pipeline.Worker`, `sample.Sampler`), so
# that this module imports neither pipeline nor sample (both import it): no import cycle.


class _Actor:
    def __init__(self, worker_cls: type, out: str, cfg, index: int):
        logging.basicConfig(level=logging.WARNING)
        self.loop = asyncio.new_event_loop()
        self.worker = worker_cls(Path(out), cfg, f"w{index}", index)

    def process(self, chunk):
        return self.loop.run_until_complete(self.worker.process(chunk))


def _import_ray():
    try:
        import ray
    except ImportError:
        raise RunError(
            "--ray needs Ray: pip install 'autointerp[ray]' (or `ray[default]`)"
        ) from None
    return ray


def check_address(address: str, timeout: float = 5.0) -> None:
    """Fail fast, naming the address, when nothing listens there (ray.init would wait minutes)."""
    if address in ("auto", "local"):
        return
    url = urlparse(address if "://" in address else f"tcp://{address}")
    if not url.hostname or not url.port:
        raise RunError(f"Ray address {address!r} is not HOST:PORT, ray://HOST:PORT, auto or local")
    try:
        socket.create_connection((url.hostname, url.port), timeout=timeout).close()
    except OSError as e:
        raise RunError(f"Ray address {address} does not answer ({e})") from None


def connect(address: str, workers: int) -> bool:
    """Connect to (or, for `local`, start) Ray; True when this call started it."""
    ray = _import_ray()
    check_address(address)
    if ray.is_initialized():
        return False
    kw = dict(include_dashboard=False, logging_level=logging.WARNING)
    try:
        if address == "local":
            ray.init(num_cpus=workers, **kw)
        else:
            ray.init(address=address, **kw)
    except Exception as e:  # ray raises ConnectionError, RuntimeError, ValueError, ...
        raise RunError(f"could not connect to Ray at {address}: {e}") from None
    return True


@contextmanager
def ray_session(address: str | None, workers: int) -> Iterator[None]:
    """One Ray for every stage of a job (sampling, then explain and score): connected (or, for
    `local`, started) here and shut down at the end when this block started it."""
    started = connect(address, workers) if address else False
    try:
        yield
    finally:
        if started:
            _import_ray().shutdown()


class _SampleActor:
    def __init__(
        self, sampler_cls: type, cache_cls: type, cache: str, coder: str, cfg, embeddings, bos_id
    ):
        logging.basicConfig(level=logging.WARNING)
        self.sampler = sampler_cls(cache_cls(cache), coder, cfg, embeddings, bos_id)

    def sample(self, latents: list[int]) -> list[str]:
        return [self.sampler.sample(latent).model_dump_json() for latent in latents]


def sample_ray(address: str, workers: int, sampler, latents: list[int]) -> Iterator[str]:
    """The JSON line of each of `latents`, in their order, sampled by `workers` Ray actors that each
    build their own copy of the driver's `sampler` (a Sampler) from the cache on the shared file
    system. At most two chunks per worker are out at once, so the lines held waiting for an earlier
    chunk stay few."""
    ray = _import_ray()
    if sampler.wants_neighbours:
        sampler.neighbours()  # computed and stored beside the cache once, before the workers read it
    started = connect(address, workers)
    try:
        size = max(1, min(256, math.ceil(len(latents) / (4 * workers))))
        chunks = [latents[i : i + size] for i in range(0, len(latents), size)]
        embeddings = None if sampler.embeddings is None else ray.put(sampler.embeddings)
        actor = ray.remote(num_cpus=1)(_SampleActor)
        root = str(sampler.cache.root.resolve())
        pool = [
            actor.remote(
                type(sampler),
                type(sampler.cache),
                root,
                sampler.coder,
                sampler.cfg,
                embeddings,
                sampler.bos_id,
            )
            for _ in range(workers)
        ]
        slots = [a for _ in range(2) for a in pool]  # two chunks out per worker
        pending: dict = {}  # object ref -> (actor, chunk number)
        done: dict[int, list[str]] = {}  # finished chunks waiting for an earlier one
        submitted = 0
        for nxt in range(len(chunks)):
            while nxt not in done:  # chunks go out in order, so chunk `nxt` is out or next
                while slots and submitted < len(chunks) and len(done) < 2 * workers:
                    a = slots.pop(0)
                    pending[a.sample.remote(chunks[submitted])] = (a, submitted)
                    submitted += 1
                (ref,), _ = ray.wait(list(pending), num_returns=1)
                a, number = pending.pop(ref)
                try:
                    done[number] = ray.get(ref)
                except ray.exceptions.RayError as e:
                    raise RunError(f"a Ray worker failed while sampling: {e}") from None
                slots.append(a)
            yield from done.pop(nxt)
    finally:
        if started:
            ray.shutdown()


def run_ray(
    address: str,
    workers: int,
    out: Path,
    cfg,
    chunks: list,
    sink: Callable,
    worker_cls: type,
    gpus_per_worker: float = 0.0,
) -> None:
    """Process `chunks` (`autointerp.pipeline.PlannedChunk`) on `workers` Ray actors, each holding a
    `worker_cls` (`autointerp.pipeline.Worker`); `sink` (the driver's writer) gets each result. A chunk's records are read on the driver as it is submitted,
    so at most workers x chunks_in_flight chunks are held."""
    ray = _import_ray()
    started = connect(address, workers)
    try:
        actor = ray.remote(num_cpus=1, num_gpus=gpus_per_worker)(_Actor)
        pool = [actor.remote(worker_cls, str(out.resolve()), cfg, i) for i in range(workers)]
        todo = list(reversed(chunks))
        pending: dict = {}

        def submit(a) -> None:
            if todo:
                pending[a.process.remote(todo.pop().load())] = a

        for _ in range(cfg.chunks_in_flight):  # round-robin: every worker starts at once
            for a in pool:
                submit(a)
        while pending:
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            a = pending.pop(ref)
            try:
                result = ray.get(ref)
            except ray.exceptions.RayError as e:
                raise RunError(f"a Ray worker failed: {e}") from None
            sink(result)
            submit(a)
    finally:
        if started:
            ray.shutdown()
