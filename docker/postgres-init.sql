CREATE DATABASE anomaly_catalog;
