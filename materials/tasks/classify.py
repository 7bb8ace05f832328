from celery import group, shared_task

from materials.learning.inference import chunked, classify_ids, unpredicted_ids
from materials.models import Job, ModelVersion
from materials.tasks.base import run_tracked


@shared_task(name="materials.classify_all", time_limit=1800)
def classify_all(job_id: int, model_version_id: int, chunk_size: int = 10_000) -> None:
    """Fan out: one ``classify_chunk`` per ``chunk_size`` unpredicted materials."""
    job = Job.objects.get(pk=job_id)
    version = ModelVersion.objects.get(pk=model_version_id)
    chunks = chunked(unpredicted_ids(version), chunk_size)
    job.mark_running(f"{len(chunks)} chunks to classify")
    Job.objects.filter(pk=job.pk).update(result={"chunks": len(chunks), "chunks_done": 0, "predicted": 0})
    if not chunks:
        job.mark_done("nothing to classify")
        return
    group(classify_chunk.s(job_id, model_version_id, ids) for ids in chunks).apply_async()


@shared_task(name="materials.classify_chunk", time_limit=1800)
def classify_chunk(job_id: int, model_version_id: int, material_ids: list[int]) -> None:
    """Predict one chunk and count it on the job; the last chunk closes the job."""
    try:
        written = classify_ids(ModelVersion.objects.get(pk=model_version_id), material_ids)
    except Exception as error:
        Job.objects.get(pk=job_id).mark_failed(f"{type(error).__name__}: {error}")
        raise
    Job.count_classified_chunk(job_id, written)


@shared_task(name="materials.promote_model", time_limit=600)
def promote_model(job_id: int, model_version_id: int) -> None:
    from materials.learning.training import promote

    job = Job.objects.get(pk=job_id)
    run_tracked(job, lambda: {"production": promote(model_version_id).pk})


@shared_task(name="materials.screen_release", time_limit=3600)
def screen_release(batch_id: int) -> None:
    """Screen one release: stage 1 here, stage 2's FEFF jobs on the ``feff`` queue."""
    from materials.screening.pipeline import screen_batch
    from materials.screening.stage2 import run_feff_jobs

    run_feff_jobs(screen_batch(batch_id))
