"""Great Expectations validation of every batch before its consumers read it.

* :mod:`anomaly.validation.suites`: the suites as code (names, severities, descriptions);
  no Great Expectations import, so DAG files and the CLI may import it.
* :mod:`anomaly.validation.engine`: runs a suite on a pandas batch with Great Expectations 1.x
  (imported there, and only by validation tasks: it takes seconds).
* :mod:`anomaly.validation.gate`: results to ``validation_results``, Data Docs pages, messages,
  ``quarantine_batches``.
* :mod:`anomaly.validation.docs`: the static HTML pages and the index under
  ``ANOMALY_HOME/reports/validation/``.

The raw gate lives in :func:`anomaly.ingest.release_interval` (staged batch -> ``raw_metrics``
or ``quarantine``); the features gate in :func:`anomaly.features.validate_features`.
"""

from __future__ import annotations


class ValidationFailed(RuntimeError):
    """A critical expectation failed: the batch was quarantined and its consumers never saw it.

    The message names the suite, the expectation, the observed value and the interval.
    """

    retryable = False  # the same batch fails the same way: Airflow retries would only delay it
