"""Layer 0, the ground every other layer stands on: errors, config loading, atomic file writing, the
RUN folder's names, and image conversion and PNG writing. Imports nothing from ldm."""
