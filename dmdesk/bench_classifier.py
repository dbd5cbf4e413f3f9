"""Benchmark of pure classification: DMs per second on one core, and peak memory.

Messages are the BANKING77 test split and the team's own held-out examples, cycled to
the count asked for, classified in batches through ``Classifier.classify_batch`` (the
path the service uses). No timing is asserted anywhere: this prints figures.
"""

import itertools
import os
import resource
import time
from typing import Any

from services.classifier import datasets
from services.classifier.pipeline import Classifier, ClassifyRequest
from shared.events import Contact

WARM_UP = 512


def _peak_rss_mb() -> float:
    # Linux reports ru_maxrss in kibibytes.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(messages: int = 30_000, batch_size: int = 256, pin_one_core: bool = True) -> dict[str, Any]:
    """Classify ``messages`` DMs in batches and report throughput and memory.

    Args:
        messages: how many DMs to classify (after a warm-up).
        batch_size: DMs per ``classify_batch`` call.
        pin_one_core: run on one CPU (``sched_setaffinity``), the figure the issue asks for.

    Returns:
        DMs per second (wall clock and per CPU second), batch size, peak RSS after loading
        and at the end (MB).
    """
    if pin_one_core and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    rss_before = _peak_rss_mb()
    classifier = Classifier()
    rss_loaded = _peak_rss_mb()
    texts = [example.text for example in datasets.banking77("test")]
    texts += [example.text for example in datasets.own_examples(datasets.OWN_EXAMPLES_TEST)]
    contact = Contact(platform_id="bench", followers=120)
    requests = [
        ClassifyRequest(text, contact)
        for text in itertools.islice(itertools.cycle(texts), messages + WARM_UP)
    ]
    classifier.classify_batch(requests[:WARM_UP])
    started = time.perf_counter()
    cpu_started = time.process_time()
    for start in range(WARM_UP, len(requests), batch_size):
        classifier.classify_batch(requests[start : start + batch_size])
    seconds = time.perf_counter() - started
    cpu_seconds = time.process_time() - cpu_started
    return {
        "messages": messages,
        "batch_size": batch_size,
        "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "seconds": round(seconds, 3),
        "dms_per_second": round(messages / seconds),
        "cpu_seconds": round(cpu_seconds, 3),
        # On a shared machine wall time includes waiting for the core; CPU time does not.
        "dms_per_cpu_second": round(messages / cpu_seconds),
        "peak_rss_mb_at_start": round(rss_before, 1),
        "peak_rss_mb_after_load": round(rss_loaded, 1),
        "peak_rss_mb": round(_peak_rss_mb(), 1),
        "model_version": classifier.model.version,
    }
