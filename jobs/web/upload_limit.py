"""The upload size limit, enforced while Django parses a multipart body."""
from __future__ import annotations

from django.conf import settings
from django.core.files.uploadhandler import FileUploadHandler, StopUpload


class SizeLimitUploadHandler(FileUploadHandler):
    """Stops reading the request body as soon as a file passes GEDGE_MAX_UPLOAD_BYTES.

    It runs first among the upload handlers, so the chunk that crosses the limit is never handed to the
    handler that writes the temporary file, and the rest of the body is not read at all.
    """

    def __init__(self, request=None):
        super().__init__(request)
        self.received = 0

    def handle_raw_input(self, input_data, META, content_length, boundary, encoding=None):
        self.received = 0

    def receive_data_chunk(self, raw_data, start):
        self.received = start + len(raw_data)
        if self.received > settings.GEDGE_MAX_UPLOAD_BYTES:
            self.request.gedge_upload_too_large = True
            # connection_reset=True: Django's parser then skips draining the remaining body (up to the full
            # oversized upload) just to throw it away; the response tells the client to stop.
            raise StopUpload(connection_reset=True)
        return raw_data

    def file_complete(self, file_size):
        return None
