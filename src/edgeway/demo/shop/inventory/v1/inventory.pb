
è
.edgeway/demo/shop/inventory/v1/inventory.protoshop.inventory.v1"*
Line
sku (	Rsku
qty (Rqty"Z
ReserveRequest
order_id (	RorderId-
items (2.shop.inventory.v1.LineRitems"%
OrderRef
order_id (	RorderId"o
Reservation
order_id (	RorderId
status (	Rstatus-
items (2.shop.inventory.v1.LineRitems""
StockRequest
skus (	Rskus"q

StockLevel
sku (	Rsku
on_hand (RonHand
reserved (Rreserved
	available (R	available"C

StockReply5
levels (2.shop.inventory.v1.StockLevelRlevels2≈
	InventoryQ
Reserve!.shop.inventory.v1.ReserveRequest.shop.inventory.v1.Reservation"êJ
Commit.shop.inventory.v1.OrderRef.shop.inventory.v1.Reservation"êK
Release.shop.inventory.v1.OrderRef.shop.inventory.v1.Reservation"êL
Stock.shop.inventory.v1.StockRequest.shop.inventory.v1.StockReply"êbproto3