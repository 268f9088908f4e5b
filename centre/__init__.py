"""Reference centre: a receiver that stores the fleet's events and thumbnails, a store query, a commander.

The city's own centre software consumes the same MQTT contract; this package shows how (shared
subscriptions, upsert by ``event_id``, thumbnail join with sha256 check, MQTT 5 request/response).
"""
