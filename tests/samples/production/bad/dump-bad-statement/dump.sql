CREATE TABLE domains (id INT PRIMARY KEY, name VARCHAR(50));
INSERT INTO domains VALUES (1,'a.test');
INSERT INTO domains VALUES (2,'b.test',);
