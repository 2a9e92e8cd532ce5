"""The payment REST API (docs/payments.md, "Admission and idempotency").

``create_app(settings)`` builds the FastAPI app; ``run_api(settings)`` serves it with uvicorn
on 127.0.0.1:``settings.api_port``. Nothing here runs at import time.
"""
