from celery import shared_task


@shared_task(acks_late=True, ignore_result=True)
def process_upload(operation_id: str) -> None:
    """Assemble, check, parse and store an uploaded model (claimed once; a redelivery resumes)."""
    from onnx_models.services import process

    process(operation_id)


@shared_task(ignore_result=True)
def expire_uploads() -> None:
    """Cancel abandoned uploads and remove parts that nothing will complete (periodic)."""
    from onnx_models.services import expire_uploads as expire

    expire()
