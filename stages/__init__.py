"""The three detection stages as plain Python: no Django, no Dramatiq.

preprocess_video -> run_inference -> postprocess_detections, joined by files in a work folder
(see stages/framestore.py for the inter-stage format). Each stage takes a ``progress`` callback
``progress(done, total)``, called at each batch boundary: after every frame in preprocessing and
postprocessing, after every detector batch (GEDGE_BATCH_SIZE frames) in inference. The caller may raise from
it (for example to cancel) and the stage stops there; what the caller does that costs more than a few
microseconds it paces by the clock, not by the count.
"""
