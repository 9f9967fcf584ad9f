"""learnkb's domain and storage: embedding, ingestion, retrieval, answering, learning, SQL."""
