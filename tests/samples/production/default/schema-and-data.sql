-- MariaDB dump 10.19  Distrib 10.11.6-MariaDB, for debian-linux-gnu (x86_64)
CREATE TABLE `domains` (
  `id` int(10) unsigned NOT NULL AUTO_INCREMENT,
  `name` varchar(253) NOT NULL,
  PRIMARY KEY (`id`),
  UNIQUE KEY `name` (`name`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
INSERT INTO `domains` VALUES (1,'default.test');
CREATE TABLE `users` (
  `id` int(10) unsigned NOT NULL AUTO_INCREMENT,
  `domain_id` int(10) unsigned NOT NULL,
  `email` varchar(254) NOT NULL,
  `password` varchar(255) NOT NULL,
  PRIMARY KEY (`id`),
  UNIQUE KEY `email` (`email`),
  KEY `users_domain` (`domain_id`),
  CONSTRAINT `users_domain` FOREIGN KEY (`domain_id`) REFERENCES `domains` (`id`) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
INSERT INTO `users` VALUES (1,1,'ann@default.test','{ARGON2ID}HASH-OF-ann'),(2,1,'ben@default.test','{ARGON2ID}HASH-OF-ben');
CREATE TABLE `aliases` (
  `id` int(10) unsigned NOT NULL AUTO_INCREMENT,
  `domain_id` int(10) unsigned NOT NULL,
  `source` varchar(254) NOT NULL,
  `destination` varchar(254) NOT NULL,
  PRIMARY KEY (`id`),
  UNIQUE KEY `source_destination` (`source`,`destination`),
  KEY `aliases_domain` (`domain_id`),
  CONSTRAINT `aliases_domain` FOREIGN KEY (`domain_id`) REFERENCES `domains` (`id`) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
INSERT INTO `aliases` VALUES (1,1,'postmaster@default.test','ann@default.test'),(2,1,'team@default.test','ann@default.test'),(3,1,'team@default.test','ben@default.test');
