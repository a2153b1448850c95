"""The WebSocket lobby: every text a client sends is broadcast to every client in
the lobby through the channel layer, with the Redis region the layer is on."""

from __future__ import annotations

from typing import Any

from channels.generic.websocket import AsyncJsonWebsocketConsumer

LOBBY = "lobby"


class LobbyConsumer(AsyncJsonWebsocketConsumer):  # type: ignore[misc]
    async def connect(self) -> None:
        await self.channel_layer.group_add(LOBBY, self.channel_name)
        await self.accept()
        await self.send_json({"type": "welcome", "served_by": self.channel_layer.geofailover.active})

    async def disconnect(self, code: int) -> None:
        await self.channel_layer.group_discard(LOBBY, self.channel_name)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        await self.channel_layer.group_send(LOBBY, {"type": "lobby.message", "text": str(content.get("text", ""))})

    async def lobby_message(self, event: dict[str, Any]) -> None:
        await self.send_json({"type": "message", "text": event["text"], "served_by": self.channel_layer.geofailover.active})
