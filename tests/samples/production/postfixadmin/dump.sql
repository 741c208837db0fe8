-- MySQL dump 10.13  Distrib 5.7.44, for Linux (x86_64)
--
-- Host: localhost    Database: postfix
-- ------------------------------------------------------
-- Server version	5.7.44

/*!40101 SET @OLD_CHARACTER_SET_CLIENT=@@CHARACTER_SET_CLIENT */;
/*!40101 SET NAMES utf8 */;
/*!40014 SET @OLD_UNIQUE_CHECKS=@@UNIQUE_CHECKS, UNIQUE_CHECKS=0 */;
/*!40014 SET @OLD_FOREIGN_KEY_CHECKS=@@FOREIGN_KEY_CHECKS, FOREIGN_KEY_CHECKS=0 */;
/*!40101 SET @OLD_SQL_MODE=@@SQL_MODE, SQL_MODE='NO_AUTO_VALUE_ON_ZERO' */;

--
-- Table structure for table `domain`
--

DROP TABLE IF EXISTS `domain`;
CREATE TABLE `domain` (
  `domain` varchar(255) NOT NULL,
  `description` varchar(255) CHARACTER SET utf8 NOT NULL,
  `aliases` int(10) NOT NULL DEFAULT '0',
  `mailboxes` int(10) NOT NULL DEFAULT '0',
  `maxquota` bigint(20) NOT NULL DEFAULT '0',
  `quota` bigint(20) NOT NULL DEFAULT '0',
  `transport` varchar(255) NOT NULL,
  `backupmx` tinyint(1) NOT NULL DEFAULT '0',
  `created` datetime NOT NULL DEFAULT '2000-01-01 00:00:00',
  `modified` datetime NOT NULL DEFAULT '2000-01-01 00:00:00',
  `active` tinyint(1) NOT NULL DEFAULT '1',
  PRIMARY KEY (`domain`)
) ENGINE=InnoDB DEFAULT CHARSET=latin1 COMMENT='Postfix Admin - Virtual Domains';

LOCK TABLES `domain` WRITE;
INSERT INTO `domain` VALUES ('ALL','',0,0,0,0,'',0,'2024-01-10 10:00:00','2024-01-10 10:00:00',1),('example.org','Example Org',0,0,10,2048,'virtual',0,'2024-01-10 10:00:00','2024-01-10 10:00:00',1),('example.net','Alias domain of example.org',0,0,10,2048,'virtual',0,'2024-01-10 10:00:00','2024-01-10 10:00:00',1);
UNLOCK TABLES;

--
-- Table structure for table `mailbox`
--

DROP TABLE IF EXISTS `mailbox`;
CREATE TABLE `mailbox` (
  `username` varchar(255) NOT NULL,
  `password` varchar(255) NOT NULL,
  `name` varchar(255) CHARACTER SET utf8 NOT NULL,
  `maildir` varchar(255) NOT NULL,
  `quota` bigint(20) NOT NULL DEFAULT '0',
  `local_part` varchar(255) NOT NULL,
  `domain` varchar(255) NOT NULL,
  `created` datetime NOT NULL DEFAULT '2000-01-01 00:00:00',
  `modified` datetime NOT NULL DEFAULT '2000-01-01 00:00:00',
  `active` tinyint(1) NOT NULL DEFAULT '1',
  `phone` varchar(30) CHARACTER SET utf8 NOT NULL DEFAULT '',
  `email_other` varchar(255) CHARACTER SET utf8 NOT NULL DEFAULT '',
  `token` varchar(255) CHARACTER SET utf8 NOT NULL DEFAULT '',
  `token_validity` datetime NOT NULL DEFAULT '2000-01-01 00:00:00',
  `password_expiry` datetime NOT NULL DEFAULT '2000-01-01 00:00:00',
  PRIMARY KEY (`username`),
  KEY `domain` (`domain`)
) ENGINE=InnoDB DEFAULT CHARSET=latin1 COMMENT='Postfix Admin - Virtual Mailboxes';

LOCK TABLES `mailbox` WRITE;
INSERT INTO `mailbox` VALUES ('alice@example.org','{MD5-CRYPT}HASH-OF-alice','Alice Liddell','example.org/alice/',0,'alice','example.org','2024-01-10 10:00:00','2024-01-10 10:00:00',1,'','','','2000-01-01 00:00:00','2000-01-01 00:00:00'),('bob@example.org','{MD5-CRYPT}HASH-OF-bob','Bob O\'Brien','example.org/bob/',0,'bob','example.org','2024-01-10 10:00:00','2024-01-10 10:00:00',1,'','','','2000-01-01 00:00:00','2000-01-01 00:00:00'),('carol@example.org','{MD5-CRYPT}HASH-OF-carol','Carol (left; inactive)','example.org/carol/',0,'carol','example.org','2024-01-10 10:00:00','2024-01-10 10:00:00',0,'','','','2000-01-01 00:00:00','2000-01-01 00:00:00');
UNLOCK TABLES;

--
-- Table structure for table `alias`
--

DROP TABLE IF EXISTS `alias`;
CREATE TABLE `alias` (
  `address` varchar(255) NOT NULL,
  `goto` text NOT NULL,
  `domain` varchar(255) NOT NULL,
  `created` datetime NOT NULL DEFAULT '2000-01-01 00:00:00',
  `modified` datetime NOT NULL DEFAULT '2000-01-01 00:00:00',
  `active` tinyint(1) NOT NULL DEFAULT '1',
  PRIMARY KEY (`address`),
  KEY `domain` (`domain`)
) ENGINE=InnoDB DEFAULT CHARSET=latin1 COMMENT='Postfix Admin - Virtual Aliases';

LOCK TABLES `alias` WRITE;
INSERT INTO `alias` VALUES ('alice@example.org','alice@example.org','example.org','2024-01-10 10:00:00','2024-01-10 10:00:00',1),('bob@example.org','bob@example.org','example.org','2024-01-10 10:00:00','2024-01-10 10:00:00',1),('carol@example.org','carol@example.org','example.org','2024-01-10 10:00:00','2024-01-10 10:00:00',0),('postmaster@example.org','alice@example.org','example.org','2024-01-10 10:00:00','2024-01-10 10:00:00',1),('team@example.org','alice@example.org,bob@example.org','example.org','2024-01-10 10:00:00','2024-01-10 10:00:00',1),('@example.org','bob@example.org','example.org','2024-01-10 10:00:00','2024-01-10 10:00:00',1);
UNLOCK TABLES;

--
-- Table structure for table `alias_domain`
--

DROP TABLE IF EXISTS `alias_domain`;
CREATE TABLE `alias_domain` (
  `alias_domain` varchar(255) NOT NULL,
  `target_domain` varchar(255) NOT NULL,
  `created` datetime NOT NULL DEFAULT '2000-01-01 00:00:00',
  `modified` datetime NOT NULL DEFAULT '2000-01-01 00:00:00',
  `active` tinyint(1) NOT NULL DEFAULT '1',
  PRIMARY KEY (`alias_domain`),
  KEY `active` (`active`),
  KEY `target_domain` (`target_domain`)
) ENGINE=InnoDB DEFAULT CHARSET=latin1 COMMENT='Postfix Admin - Domain Aliases';

LOCK TABLES `alias_domain` WRITE;
INSERT INTO `alias_domain` VALUES ('example.net','example.org','2024-01-10 10:00:00','2024-01-10 10:00:00',1);
UNLOCK TABLES;

--
-- Table structure for table `quota2`
--

DROP TABLE IF EXISTS `quota2`;
CREATE TABLE `quota2` (
  `username` varchar(100) NOT NULL,
  `bytes` bigint(20) NOT NULL DEFAULT '0',
  `messages` int(11) NOT NULL DEFAULT '0',
  PRIMARY KEY (`username`)
) ENGINE=InnoDB DEFAULT CHARSET=latin1;

LOCK TABLES `quota2` WRITE;
INSERT INTO `quota2` VALUES ('alice@example.org',0,0),('bob@example.org',0,0);
UNLOCK TABLES;
/*!40101 SET SQL_MODE=@OLD_SQL_MODE */;
/*!40014 SET FOREIGN_KEY_CHECKS=@OLD_FOREIGN_KEY_CHECKS */;
/*!40014 SET UNIQUE_CHECKS=@OLD_UNIQUE_CHECKS */;
/*!40101 SET CHARACTER_SET_CLIENT=@OLD_CHARACTER_SET_CLIENT */;

-- Dump completed on 2024-01-10 10:00:00
