"""learnkb's domain and storage: embedding, ingestion, retrieval, answering, learning, SQL."""

import os

# numpy's OpenBLAS would split even the small products of answering (a 10 x 384 by 384 x 384
# whitening) over every core and spin its threads between them, against the model and
# PostgreSQL: three times the CPU of one thread here. Set before any module imports numpy.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
