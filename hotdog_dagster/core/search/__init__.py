"""Search: the FAISS index, the filter language, the engine and its gallery."""
