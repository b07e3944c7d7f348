"""RAG: index documents with an offline embedding model and FAISS, retrieve passages, answer from them.

================  ==============================================================================================
:mod:`.options`   RagBuildOptions, RagAddOptions, RagQueryOptions (the one definition of the verbs' options)
:mod:`.sources`   files/folders under the data root -> passages with their source (file + line, row or page)
:mod:`.chunking`  passages -> chunks on paragraph boundaries, sized in the embedding model's tokens
:mod:`.embed`     the embedding model, offline, weights checked by sha256
:mod:`.store`     ``outputs/NAME/rag/``: the files, FAISS index choice, atomic write, consistency checks on load
:mod:`.build`     ``build`` / ``add`` (append without embedding old chunks again; duplicates skipped by hash)
:mod:`.retrieve`  ``Retriever.retrieve`` (global top-k -> documents, sources, scores) and ``prompt``
:mod:`.main`      the trainer verbs rag-build, rag-add, rag-query
:mod:`.serve`     the trainer verb rag-serve: one index kept warm for ``kolo serve``'s /api/v1/rag routes
================  ==============================================================================================

Heavy imports (torch, sentence-transformers, faiss) happen inside functions: importing this package is light.
"""
