CREATE TABLE `cases` (
	`id` text PRIMARY KEY NOT NULL,
	`order_id` text NOT NULL,
	`customer_id` text NOT NULL,
	`status` text NOT NULL,
	`locale` text NOT NULL,
	`resume_token` text NOT NULL,
	`created_at` integer NOT NULL,
	`updated_at` integer NOT NULL,
	FOREIGN KEY (`order_id`) REFERENCES `orders`(`id`) ON UPDATE no action ON DELETE no action,
	FOREIGN KEY (`customer_id`) REFERENCES `customers`(`id`) ON UPDATE no action ON DELETE no action,
	CONSTRAINT "cases_status_check" CHECK("cases"."status" in ('open', 'handoff', 'resolved')),
	CONSTRAINT "cases_locale_check" CHECK("cases"."locale" in ('zh', 'en'))
);
--> statement-breakpoint
CREATE UNIQUE INDEX `cases_resume_token_unique` ON `cases` (`resume_token`);--> statement-breakpoint
CREATE INDEX `cases_status_idx` ON `cases` (`status`);--> statement-breakpoint
CREATE TABLE `coupons` (
	`id` text PRIMARY KEY NOT NULL,
	`case_id` text NOT NULL,
	`order_id` text NOT NULL,
	`customer_id` text NOT NULL,
	`amount_fen` integer NOT NULL,
	`idempotency_key` text NOT NULL,
	`created_at` integer NOT NULL,
	FOREIGN KEY (`case_id`) REFERENCES `cases`(`id`) ON UPDATE no action ON DELETE no action,
	FOREIGN KEY (`order_id`) REFERENCES `orders`(`id`) ON UPDATE no action ON DELETE no action,
	FOREIGN KEY (`customer_id`) REFERENCES `customers`(`id`) ON UPDATE no action ON DELETE no action,
	CONSTRAINT "coupons_amount_fen_check" CHECK("coupons"."amount_fen" > 0)
);
--> statement-breakpoint
CREATE UNIQUE INDEX `coupons_idempotency_key_unique` ON `coupons` (`idempotency_key`);--> statement-breakpoint
CREATE INDEX `coupons_case_id_idx` ON `coupons` (`case_id`);--> statement-breakpoint
CREATE TABLE `customers` (
	`id` text PRIMARY KEY NOT NULL,
	`name` text NOT NULL,
	`phone` text NOT NULL,
	`address` text NOT NULL
);
--> statement-breakpoint
CREATE TABLE `machine_snapshots` (
	`case_id` text PRIMARY KEY NOT NULL,
	`snapshot` text NOT NULL,
	`updated_at` integer NOT NULL,
	FOREIGN KEY (`case_id`) REFERENCES `cases`(`id`) ON UPDATE no action ON DELETE no action
);
--> statement-breakpoint
CREATE TABLE `merchants` (
	`id` text PRIMARY KEY NOT NULL,
	`name` text NOT NULL,
	`phone` text NOT NULL,
	`address` text NOT NULL
);
--> statement-breakpoint
CREATE TABLE `messages` (
	`id` integer PRIMARY KEY AUTOINCREMENT NOT NULL,
	`case_id` text NOT NULL,
	`seq` integer NOT NULL,
	`party` text NOT NULL,
	`direction` text NOT NULL,
	`text` text NOT NULL,
	`client_msg_id` text,
	`created_at` integer NOT NULL,
	FOREIGN KEY (`case_id`) REFERENCES `cases`(`id`) ON UPDATE no action ON DELETE no action,
	CONSTRAINT "messages_seq_check" CHECK("messages"."seq" >= 1),
	CONSTRAINT "messages_party_check" CHECK("messages"."party" in ('customer', 'rider', 'merchant', 'operator', 'system')),
	CONSTRAINT "messages_direction_check" CHECK("messages"."direction" in ('in', 'out'))
);
--> statement-breakpoint
CREATE UNIQUE INDEX `messages_case_id_seq_idx` ON `messages` (`case_id`,`seq`);--> statement-breakpoint
CREATE UNIQUE INDEX `messages_case_id_client_msg_id_idx` ON `messages` (`case_id`,`client_msg_id`);--> statement-breakpoint
CREATE TABLE `order_status_history` (
	`id` integer PRIMARY KEY AUTOINCREMENT NOT NULL,
	`order_id` text NOT NULL,
	`status` text NOT NULL,
	`at` integer NOT NULL,
	FOREIGN KEY (`order_id`) REFERENCES `orders`(`id`) ON UPDATE no action ON DELETE no action,
	CONSTRAINT "order_status_history_status_check" CHECK("order_status_history"."status" in ('placed', 'preparing', 'delivering', 'delivered', 'cancelled'))
);
--> statement-breakpoint
CREATE INDEX `order_status_history_order_id_idx` ON `order_status_history` (`order_id`);--> statement-breakpoint
CREATE TABLE `orders` (
	`id` text PRIMARY KEY NOT NULL,
	`customer_id` text NOT NULL,
	`merchant_id` text NOT NULL,
	`rider_id` text,
	`items` text NOT NULL,
	`amount_fen` integer NOT NULL,
	`promised_at` integer NOT NULL,
	`status` text NOT NULL,
	`rider_eta_min` integer,
	`created_at` integer NOT NULL,
	FOREIGN KEY (`customer_id`) REFERENCES `customers`(`id`) ON UPDATE no action ON DELETE no action,
	FOREIGN KEY (`merchant_id`) REFERENCES `merchants`(`id`) ON UPDATE no action ON DELETE no action,
	FOREIGN KEY (`rider_id`) REFERENCES `riders`(`id`) ON UPDATE no action ON DELETE no action,
	CONSTRAINT "orders_status_check" CHECK("orders"."status" in ('placed', 'preparing', 'delivering', 'delivered', 'cancelled')),
	CONSTRAINT "orders_amount_fen_check" CHECK("orders"."amount_fen" >= 0)
);
--> statement-breakpoint
CREATE INDEX `orders_customer_id_idx` ON `orders` (`customer_id`);--> statement-breakpoint
CREATE TABLE `riders` (
	`id` text PRIMARY KEY NOT NULL,
	`name` text NOT NULL,
	`phone` text NOT NULL
);
--> statement-breakpoint
CREATE TABLE `tool_calls` (
	`id` integer PRIMARY KEY AUTOINCREMENT NOT NULL,
	`case_id` text NOT NULL,
	`tool` text NOT NULL,
	`role` text NOT NULL,
	`idempotency_key` text NOT NULL,
	`input` text,
	`output` text,
	`status` text NOT NULL,
	`error_code` text,
	`error_message` text,
	`created_at` integer NOT NULL,
	FOREIGN KEY (`case_id`) REFERENCES `cases`(`id`) ON UPDATE no action ON DELETE no action,
	CONSTRAINT "tool_calls_status_check" CHECK("tool_calls"."status" in ('ok', 'error'))
);
--> statement-breakpoint
CREATE UNIQUE INDEX `tool_calls_idempotency_key_unique` ON `tool_calls` (`idempotency_key`);--> statement-breakpoint
CREATE INDEX `tool_calls_case_id_idx` ON `tool_calls` (`case_id`);