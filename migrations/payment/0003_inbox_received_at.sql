-- Inbox rows past their retention are pruned in small batches by age.
CREATE INDEX inbox_received_at ON inbox (received_at);
