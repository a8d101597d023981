"""What the web process serves: the REST API (api, api_errors, files, upload_limit), the pages (views) and the
WebSocket (consumers, routing, channel_layer). Views call jobs.lifecycle.services; nothing here runs stages."""
