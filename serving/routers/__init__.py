"""The API's routes, one router per concern: health and meta, auth, predictions, model info."""
