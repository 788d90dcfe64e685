"""The latent cache: every image's latent distribution and every caption's embedding, computed once.

Both stage-2 encoders are frozen, so what they make of the dataset never changes during training;
computing it once turns each training step into UNet work only. The cache is a folder under
RUN/diffusion/cache/<fingerprint>/ of Arrow files (memory-mapped when read), one part per image
size, so that each part's latents have one fixed shape, each part written as shards by the
processes that build it together (ldm/data/cache_share.py decides which those are):

    parts.json     written last, once every shard is: the shard count and the parts in order,
                   {"version": 3, "shards": 2, "parts": [{"name": "32x32", "size": [32, 32], "rows": 24}]}
    32x32/         one part per image size (a bucket's; data.resolution's square without buckets):
        shard-00000-of-00002.arrow   shard i: the i-th contiguous block of the part's rows (whole
        shard-00001-of-00002.arrow   encoder batches), in the data's order; one row per image:
            mean        (C, h, w) float32   the latent's posterior mean (KL) or pre-quantization value (VQ)
            std         (C, h, w) float32   the posterior's standard deviation (KL only)
            mask        (1, h, w) float32   the loss mask at the latent grid (with data.mask only)
            embeddings  (n, L, D) float16   one text embedding per caption (n >= 1: every caption is kept);
                                            with prompt_chunks N > 1, L is N windows of 77 tokens, each
                                            caption padded with the empty prompt's window
            pooled      (n, k, D) float16   an SDXL-style model's only: each caption's pooled embedding,
                                            as the k rows that its packed embedding ends with
                                            (ldm.components.text_time); a batch's embeddings are the
                                            token rows, then these
            captions    n strings
            text_length n int32             (prompt_chunks > 1 only) each caption's own rows of L: a
                                            batch is cut to its longest caption
            time_ids    6 float32           an SDXL-style model's only: the image's original (height,
                                            width), its crop's (top, left) and the part's (height, width)
        shard-00000-of-00002.json    its marker, written once the shard is whole: rows, seconds, host

Process i of n encodes shard i of every part (`build_shard`), then polls for the other shards'
markers (`wait_for_shards`) and writes parts.json (`finish_cache`). Contiguous blocks rather than
every n-th row: the shards read back in index order are the part's rows in the data's order, with
no index to keep, each process reads its source rows in sequence, and blocks of whole batches
encode every image in the same batch as one process would (`shard_block`: the same bits). A shard is written under a
temporary name and renamed whole, then marked; a restarted build keeps every marked shard and
redoes the rest. Waiting on markers instead of a collective means that no process is under a
collective timeout while the others encode: each waits as long as the slowest share takes.

The cache's rows are numbered part after part, in the data's order within each part: the same
whatever the number of processes that built it (a cache built by 2 processes equals one built by 1).

The fingerprint covers all that decides the cache's content: the dataset's own `datasets`
fingerprint (its files), the data settings that change the pixels or the captions, and the weights
and configs of the autoencoder and the text encoder (with `prompt_chunks` above 1, the number of
windows a caption may take); with `data.mask`, the mask settings (and the
mask files' names, sizes and times), so that a cache without masks never serves a run with them.
The same inputs find the same folder and reuse it; any changed input gives a new fingerprint and a
new cache. Embeddings are stored in float16,
halving the largest part of the cache (CLIP's hidden states lose nothing that matters).

One module per job:
    layout    the folder's names: parts.json, part and shard files, markers, the cache version
    key       the fingerprint: which inputs decide a cache's content
    build     planning the parts, encoding a shard, waiting for the others, writing parts.json
    read      opening a cache and serving training batches from its memory-mapped columns
    compare   what differs between two caches (the tests and the cache benchmark check that
              every way of building gives the same cache)
"""
