-- Run once by the postgres image on a fresh data volume
-- (/docker-entrypoint-initdb.d): one database per service, as in production.
-- Each service creates its own tables with its own migrations at start.
CREATE DATABASE orchestrator;
CREATE DATABASE inventory;
CREATE DATABASE tax;
CREATE DATABASE payment;
